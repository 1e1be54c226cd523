"""Bounded concurrency per destination: at most N sessions of this process to one site."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

__all__ = ["DestinationLimiter", "site_of"]


def site_of(hops: list[tuple[str, int]]) -> str:
    """A destination as its set of servers, so that domains sharing MX hosts share a limit."""
    return ",".join(sorted({f"{host}:{port}" for host, port in hops})) or "-"


class DestinationLimiter:
    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._users: dict[str, int] = {}

    def active(self, site: str) -> int:
        """Sessions in use or waiting for `site` (for tests and metrics)."""
        return self._users.get(site, 0)

    @contextlib.asynccontextmanager
    async def slot(self, site: str) -> AsyncIterator[None]:
        semaphore = self._slots.setdefault(site, asyncio.Semaphore(self._limit))
        self._users[site] = self._users.get(site, 0) + 1
        try:
            async with semaphore:
                yield
        finally:
            self._users[site] -= 1
            if not self._users[site]:  # forget idle sites: the map stays bounded
                del self._users[site], self._slots[site]
