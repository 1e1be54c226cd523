"""rspamd's `/checkv2`: the spool file streamed as the request body, the envelope as headers.

The body is never read whole into memory: httpx sends it from an async iterator over the
file, with its Content-Length (so no chunked encoding). Only the score is used; the symbols
are kept for the log and the quarantine record, never added to the mail.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from relay.content.errors import ScannerUnavailable

__all__ = ["RspamdClient", "SpamCheck"]

CHUNK = 256 * 1024


@dataclass(frozen=True)
class SpamCheck:
    score: float
    action: str
    """rspamd's own action name (its thresholds, not ours): for the log only."""
    symbols: tuple[str, ...]


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    with open(path, "rb") as file:  # noqa: ASYNC230 (just written: in the page cache)
        while piece := file.read(CHUNK):
            yield piece


class RspamdClient:
    def __init__(self, url: str, *, client: httpx.AsyncClient | None = None) -> None:
        self.url = url.rstrip("/") + "/checkv2"
        self._client = client or httpx.AsyncClient(
            trust_env=False, timeout=None, limits=httpx.Limits(max_keepalive_connections=20)
        )

    async def check_file(
        self,
        path: Path,
        size: int,
        *,
        ip: str,
        helo: str,
        mail_from: str,
        recipients: tuple[str, ...],
        user: str,
        queue_id: str,
    ) -> SpamCheck:
        """The caller bounds the time (`asyncio.timeout`); other failures are
        `ScannerUnavailable`."""
        headers = [
            ("Content-Length", str(size)),
            ("IP", ip),
            ("Helo", helo or "unknown"),
            ("From", mail_from),
            ("User", user),
            ("Queue-Id", queue_id),
            *(("Rcpt", r) for r in recipients),
        ]
        try:
            response = await self._client.post(self.url, content=_chunks(path), headers=headers)
            if response.status_code != 200:
                raise ScannerUnavailable("rspamd", f"HTTP {response.status_code}")
            data = response.json()
            return SpamCheck(
                score=float(data["score"]),
                action=str(data.get("action", "")),
                symbols=tuple(sorted(data.get("symbols", {}))),
            )
        except httpx.HTTPError as exc:
            raise ScannerUnavailable("rspamd", f"{type(exc).__name__}: {exc}") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise ScannerUnavailable("rspamd", f"unreadable answer: {exc}") from None

    async def aclose(self) -> None:
        await self._client.aclose()
