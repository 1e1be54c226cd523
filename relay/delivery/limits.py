"""Bounded concurrency per destination: at most N sessions of this node to one site.

Alone (`--processes 1`) the process counts its own sessions. As one of a supervisor's
children it also takes each slot in the node's shared memory (`relay.node.shared`), so the
limit holds over every process of the node, without a Redis round trip per delivery; a
child killed with -9 gives its slots back when the supervisor reaps it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from relay.node.share import current
from relay.node.shared import SharedCounts

__all__ = ["DestinationLimiter", "site_of"]

_POLL_FIRST = 0.01
_POLL_MAX = 0.2
"""A slot freed by another process is seen within this long (no cross-process wake-up)."""


def site_of(hops: list[tuple[str, int]]) -> str:
    """A destination as its set of servers, so that domains sharing MX hosts share a limit."""
    return ",".join(sorted({f"{host}:{port}" for host, port in hops})) or "-"


class DestinationLimiter:
    def __init__(self, limit: int, shared: SharedCounts | None = None) -> None:
        """`shared`: the node's slot counts; default: the node's when this process is one
        of a supervisor's children, else none (this process's own sessions only)."""
        self._limit = limit
        node = current()
        self._shared = shared if shared is not None else node.destinations if node else None
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._users: dict[str, int] = {}

    def active(self, site: str) -> int:
        """Sessions of this process in use or waiting for `site` (for tests and metrics)."""
        return self._users.get(site, 0)

    @contextlib.asynccontextmanager
    async def slot(self, site: str) -> AsyncIterator[None]:
        # This process's own waiters queue on a semaphore (first come, first served); only
        # those that got past it compete with the other processes for the node's slots.
        semaphore = self._slots.setdefault(site, asyncio.Semaphore(self._limit))
        self._users[site] = self._users.get(site, 0) + 1
        try:
            async with semaphore:
                if self._shared is None:
                    yield
                    return
                await self._node_slot(self._shared, site)
                try:
                    yield
                finally:
                    self._shared.release(site)
        finally:
            self._users[site] -= 1
            if not self._users[site]:  # forget idle sites: the map stays bounded
                del self._users[site], self._slots[site]

    async def _node_slot(self, shared: SharedCounts, site: str) -> None:
        delay = _POLL_FIRST
        while shared.acquire(site, self._limit) is not None:
            await asyncio.sleep(delay)
            delay = min(_POLL_MAX, delay * 2)
