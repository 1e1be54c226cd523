"""A bound on the message bytes that deliveries of one process hold at once.

A delivery reads its body from the spool and the SMTP client copies it while sending (line
ends, dot-stuffing), so forty 20 MB messages attempted together would hold gigabytes. Each
attempt waits for its size in this budget first; a message larger than the whole budget
waits until it is alone in it, so it still goes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

__all__ = ["ByteBudget"]


class ByteBudget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        """Bytes; 0: no limit."""
        self.used = 0
        self._changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def hold(self, size: int) -> AsyncIterator[None]:
        if not self.limit:
            yield
            return
        share = min(size, self.limit)
        async with self._changed:
            await self._changed.wait_for(lambda: self.used + share <= self.limit)
            self.used += share
        try:
            yield
        finally:
            async with self._changed:
                self.used -= share
                self._changed.notify_all()
