"""The spooled message as both scanners read it: its path, its size, and its bytes read once.

A message up to `INLINE` bytes (nearly all mail) is read from the spool once and the same
bytes go to rspamd and, when clamd is asked over TCP, to clamd; a larger one is streamed from
the file by each scanner in pieces and never held whole in memory. clamd on a unix socket
reads nothing from here: it is handed the open file (relay/content/clamd.py, FILDES).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["INLINE", "MessageFile"]

INLINE = 256 * 1024
"""Up to this size a message is read whole, once, for both scanners."""


class MessageFile:
    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size
        self._data: bytes | None = None

    def small(self) -> bytes | None:
        """The whole content when it is at most `INLINE` bytes (read on first use), else None
        (then read the file in pieces). The spool file was just written: it is in the page
        cache, so the read does not wait on the disk."""
        if self.size > INLINE:
            return None
        if self._data is None:
            self._data = self.path.read_bytes()
        return self._data
