"""A process-wide budget of DATA bytes in flight, so a burst of large messages is refused
with a 452 instead of growing the process (bodies go to disk, but each transfer in flight
holds buffers, a file and a share of the disk)."""

from __future__ import annotations

__all__ = ["InflightBudget"]


class InflightBudget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        """Bytes; 0: no limit."""
        self.used = 0

    def admits(self, expected: int = 0) -> bool:
        """Whether a new transfer of `expected` bytes (SIZE=, or 0 when unknown) may start."""
        if not self.limit:
            return True
        return self.used + expected < self.limit

    def take(self, size: int) -> None:
        self.used += size

    def give(self, size: int) -> None:
        self.used = max(0, self.used - size)
