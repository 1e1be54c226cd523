"""A small HTTPS server for tests: serves one MTA-STS policy with a trustme certificate."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from types import TracebackType

import trustme

__all__ = ["PolicyServer"]


class PolicyServer:
    """`GET /.well-known/mta-sts.txt` → `text` (text/plain); anything else → 404."""

    def __init__(self, cert: trustme.LeafCert, text: str, host: str = "127.0.0.1") -> None:
        self.text = text
        self.host = host
        self.port = 0
        self.requests: list[tuple[str, str]] = []
        """(path, Host header) of every request."""
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(self._context)
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> PolicyServer:
        self._server = await asyncio.start_server(self._serve, self.host, 0, ssl=self._context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1]
            host = next(
                (h.split(":", 1)[1].strip() for h in lines if h.lower().startswith("host:")), ""
            )
            self.requests.append((path, host))
            if path == "/.well-known/mta-sts.txt":
                body = self.text.encode()
                status = "200 OK"
            else:
                body, status = b"not found", "404 Not Found"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()
