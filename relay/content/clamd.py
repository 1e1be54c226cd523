"""clamd's INSTREAM over its unix socket or TCP: the spool file streamed in chunks.

Raw INSTREAM rather than a client library: the async one (aioclamd) sends 1 KiB chunks with a
thread hop each (10 MB in 1.4 s against 54 ms here) and speaks TCP only. The file is read in
the event loop in 256 KiB pieces: it was written moments ago and sits in the page cache.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass
from pathlib import Path

from relay.content.errors import ScannerUnavailable

__all__ = ["ClamdAddress", "ClamdClient"]

CHUNK = 256 * 1024


@dataclass(frozen=True)
class ClamdAddress:
    """`unix:/run/clamav/clamd.ctl` (or a bare absolute path) or `host:port`."""

    path: str | None = None
    host: str = ""
    port: int = 0

    @classmethod
    def parse(cls, text: str) -> ClamdAddress:
        text = text.strip()
        if text.startswith("unix:"):
            text = text.removeprefix("unix:")
            if not text:
                raise ValueError("unix: needs a socket path")
            return cls(path=text)
        if text.startswith("/"):
            return cls(path=text)
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"not unix:/path or host:port: {text!r}")
        return cls(host=host.strip("[]"), port=int(port))

    def __str__(self) -> str:
        return f"unix:{self.path}" if self.path else f"{self.host}:{self.port}"


class ClamdClient:
    def __init__(self, address: ClamdAddress, *, chunk: int = CHUNK) -> None:
        self.address = address
        self._chunk = chunk

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.address.path:
            return await asyncio.open_unix_connection(self.address.path)
        return await asyncio.open_connection(self.address.host, self.address.port)

    async def scan_file(self, path: Path) -> str | None:
        """The signature found in the file, or None when clean. The caller bounds the time
        (`asyncio.timeout`); every other failure is `ScannerUnavailable`."""
        try:
            reader, writer = await self._connect()
        except OSError as exc:
            raise ScannerUnavailable("clamd", f"cannot connect to {self.address}: {exc}") from None
        try:
            # One write per piece (a small message: one write in all): each send is a wake-up.
            pending = b"zINSTREAM\0"
            with open(path, "rb") as file:  # noqa: ASYNC230 (in the page cache: see above)
                while piece := file.read(self._chunk):
                    writer.write(pending + struct.pack("!I", len(piece)) + piece)
                    pending = b""
                    await writer.drain()
            writer.write(pending + struct.pack("!I", 0))
            await writer.drain()
            raw = await reader.readuntil(b"\0")
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise ScannerUnavailable("clamd", f"scan failed: {exc or type(exc).__name__}") from None
        finally:
            writer.close()
        return parse_reply(raw.rstrip(b"\0").decode("utf-8", "replace"))

    async def ping(self) -> bool:
        try:
            reader, writer = await self._connect()
        except OSError:
            return False
        try:
            writer.write(b"zPING\0")
            await writer.drain()
            return (await reader.readuntil(b"\0")).rstrip(b"\0") == b"PONG"
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return False
        finally:
            writer.close()


def parse_reply(reply: str) -> str | None:
    """`stream: OK` → None; `stream: Name.UNOFFICIAL FOUND` → `Name`; anything ending in
    ERROR (size limit, a scan error) or unknown → `ScannerUnavailable`."""
    text = reply.removeprefix("stream:").strip()
    if text == "OK":
        return None
    if text.endswith(" FOUND"):
        return text.removesuffix(" FOUND").strip().removesuffix(".UNOFFICIAL") or "unknown"
    raise ScannerUnavailable("clamd", f"answered {reply[:200]!r}")
