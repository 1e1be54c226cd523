"""Whether this node is draining, as its processes see it: one byte of shared memory.

The supervisor learns the operator's word from Redis at each heartbeat and writes it here;
its children, which inherited the mapping when forked, read it when a session opens and at
each MAIL. A read is one memory access, so the SMTP path spends no Redis round trip on it,
and a change reaches every process of the node the moment the supervisor writes it (at
most one heartbeat after `relay node drain`). A single process (`--processes 1`) keeps its
own flag, written by its own heartbeat.
"""

from __future__ import annotations

import mmap

__all__ = ["DrainFlag"]


class DrainFlag:
    """Created before the supervisor forks: an anonymous shared mapping (MAP_SHARED), so
    the parent's writes are its children's reads. A single byte is written atomically."""

    def __init__(self) -> None:
        self._cell = mmap.mmap(-1, 1, flags=mmap.MAP_SHARED)

    def is_set(self) -> bool:
        return self._cell[0] == 1

    def set(self, draining: bool) -> None:
        self._cell[0] = 1 if draining else 0
