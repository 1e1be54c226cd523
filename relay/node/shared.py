"""Counters that every process of one node shares: a table in shared memory.

Why shared memory and not Redis: the submission listener decides whether to admit a
connection synchronously, in `connection_made`, before any greeting (a refused client must
not cost a session), so a network round trip does not fit there; and a delivery already
has its budget of Redis round trips, which a Redis semaphore would add two to per attempt.
The limits these counters enforce are about the node (its sockets, its sessions to a
destination), so they need not be seen by other nodes.

Layout: `slots` entries, each a 64-bit key hash, and per entry one 32-bit count per process
(a row per child of the supervisor). A process only changes its own row, under one lock, so
the parent can give back everything a dead child held by zeroing its row: a process killed
with -9 leaks nothing. An entry is free when every row's count is 0; a key lives in at most
one entry of the `_PROBES` entries after its hash's home, found (or placed) under the lock.
Live keys are bounded by what the caller limits (connections of the node, deliveries of
the node), and the table is sized at least 4 times that, so a full probe window does not
happen in practice; if it did, the caller is refused (fails closed) rather than uncounted.

The lock is a POSIX record lock (`lockf`) on the table's file: the kernel releases it when
its holder dies, so a process killed while holding it cannot wedge the node, which a
`multiprocessing.Lock` (a semaphore) would.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import mmap
import os
import tempfile
from collections.abc import Iterator

__all__ = ["FULL", "KEY_LIMIT", "TOTAL_LIMIT", "SharedCounts"]

_PROBES = 32
_MAX_SLOTS = 1 << 16
TOTAL_LIMIT = "total"
KEY_LIMIT = "key"
FULL = "full"
"""Why `acquire` refused: the total, the key's own limit, or no room for the key."""


def _slots_for(live: int) -> int:
    wanted = max(256, 4 * live)
    return min(_MAX_SLOTS, 1 << (wanted - 1).bit_length())


@functools.lru_cache(maxsize=4096)  # the same few sites and client addresses, over and over
def _hash(key: str) -> int:
    digest = hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "little") or 1  # 0 marks an entry never used


class SharedCounts:
    """Holders per key and in all, over the processes of a node. Created by the parent
    before it forks (the memory is inherited); each child then `bind`s its row."""

    def __init__(self, rows: int, live: int) -> None:
        """`rows`: processes; `live`: the most keys that can hold counts at once."""
        self.rows = rows
        self.slots = _slots_for(live)
        self.row: int | None = None
        size = 8 * self.slots + 4 * self.slots * rows + 4 * rows
        self._fd = _anonymous_file(size)
        self._map = mmap.mmap(self._fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        view = memoryview(self._map)
        self._keys = view[: 8 * self.slots].cast("Q")
        counts_end = 8 * self.slots + 4 * self.slots * rows
        self._counts = view[8 * self.slots : counts_end].cast("I")
        """Entry i's count of row r is at i * rows + r (a row's counts are strided, an
        entry's are contiguous: its total is one slice sum)."""
        self._open = view[counts_end:].cast("I")
        """Per row, everything it holds (the node's total is their sum)."""

    def bind(self, row: int) -> None:
        """In a child: the row this process counts in."""
        if not 0 <= row < self.rows:
            raise ValueError(f"row {row} out of 0..{self.rows - 1}")
        self.row = row

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self._lock()
        try:
            yield
        finally:
            self._unlock()

    def _lock(self) -> None:
        """(`acquire` and `release`, once per delivery and per session, call these two
        directly: a generator-based context manager cost as much as the lock itself.)"""
        fcntl.lockf(self._fd, fcntl.LOCK_EX, 1, 0)

    def _unlock(self) -> None:
        fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, 0)

    def acquire(self, key: str, per_key: int, total: int | None = None) -> str | None:
        """Count one more holder of `key` in this process's row; or say why not
        (TOTAL_LIMIT, KEY_LIMIT, FULL) and count nothing."""
        row = self._my_row()
        wanted = _hash(key)
        self._lock()
        try:
            if total is not None and sum(self._open) >= total:
                return TOTAL_LIMIT
            index, found = self._find(wanted)
            if index is None:
                return FULL
            if found and self._total(index) >= per_key:
                return KEY_LIMIT
            if not found:
                self._keys[index] = wanted
            self._counts[index * self.rows + row] += 1
            self._open[row] += 1
        finally:
            self._unlock()
        return None

    def release(self, key: str) -> None:
        """One holder of `key` in this process is gone (ignored if it held nothing)."""
        row = self._my_row()
        wanted = _hash(key)
        self._lock()
        try:
            index, found = self._find(wanted)
            if index is None or not found:
                return
            at = index * self.rows + row
            if self._counts[at] > 0:
                self._counts[at] -= 1
                self._open[row] -= 1
        finally:
            self._unlock()

    def count(self, key: str) -> int:
        """Holders of `key` over the node (for tests and metrics)."""
        with self.locked():
            index, found = self._find(_hash(key))
            return self._total(index) if index is not None and found else 0

    def total(self) -> int:
        with self.locked():
            return sum(self._open)

    def reset(self, row: int) -> int:
        """The process of `row` is gone: forget what it held (the parent calls this when it
        reaps a child, before starting its replacement). Returns how many it held."""
        with self.locked():
            held = self._open[row]
            for index in range(self.slots):
                self._counts[index * self.rows + row] = 0
            self._open[row] = 0
        return int(held)

    def _find(self, wanted: int) -> tuple[int | None, bool]:
        """(the entry holding `wanted`, True), or (the first free entry, False), or (None,
        False) when the probe window has neither. Under the lock."""
        mask = self.slots - 1
        free = None
        home = wanted & mask
        keys = self._keys
        for step in range(_PROBES):
            index = (home + step) & mask
            key = keys[index]
            if key == 0:
                # Never used: a key is placed at the first free entry of its window and an
                # entry's key is never cleared, so `wanted` is not further on.
                return (index if free is None else free), False
            if self._total(index) == 0:
                if free is None:
                    free = index
            elif key == wanted:
                return index, True
        return free, False

    def _total(self, index: int) -> int:
        start = index * self.rows
        return sum(self._counts[start : start + self.rows])

    def _my_row(self) -> int:
        if self.row is None:
            raise RuntimeError("SharedCounts used before bind(row)")
        return self.row


def _anonymous_file(size: int) -> int:
    """A file only this process tree can reach (memfd on Linux, else an unlinked temp file),
    `size` bytes of zeros: the mapping's backing and the lock's target."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("relay-node-counts")
    else:  # pragma: no cover (macOS, BSD)
        fd, path = tempfile.mkstemp(prefix="relay-node-counts-")
        os.unlink(path)
    os.ftruncate(fd, size)
    return fd
