"""Sliding windows of fixed-width buckets with a running total: the maths of quota/limits.lua.

A unit added at time t sits in bucket floor(t / width) and counts until that bucket has left
the window, `span` buckets later. With 1-minute buckets and a span of 1,441, a recipient
counts from the minute it was sent until the end of that minute the next day: the count over
any true 24 hours never exceeds the quota, and a slot frees at most a minute late.
Expired buckets are subtracted lazily as time moves (amortized O(1), at most `span` fields).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["DAY", "MINUTE", "Window", "WindowShape"]


@dataclass(frozen=True)
class WindowShape:
    width_ms: int
    span: int

    def bucket(self, now_ms: int) -> int:
        return now_ms // self.width_ms

    def expiry_ms(self, bucket: int) -> int:
        return (bucket + self.span) * self.width_ms


DAY = WindowShape(width_ms=60_000, span=1441)
MINUTE = WindowShape(width_ms=1_000, span=61)


@dataclass
class Window:
    """The in-memory twin of one window hash (fields: buckets, `t` total, `o` oldest)."""

    shape: WindowShape
    buckets: dict[int, int] = field(default_factory=dict)
    total: int = 0
    oldest: int | None = None

    def slide(self, cur: int) -> int:
        """Drop the buckets that left the window; the total of what remains."""
        if self.oldest is None:
            return 0
        limit = cur - self.shape.span
        if self.oldest > limit:
            return self.total
        if limit - self.oldest >= self.shape.span - 1:
            self.buckets.clear()
            self.total, self.oldest = 0, None
            return 0
        for index in range(self.oldest, limit + 1):
            self.total -= self.buckets.pop(index, 0)
        self.oldest = limit + 1
        return self.total

    def frees_at(self, cur: int, need: int) -> int:
        """When `need` units will have left (ms); -1 if they never will by waiting."""
        freed = 0
        start = self.oldest if self.oldest is not None else cur
        for index in range(start, cur + 1):
            if index in self.buckets:
                freed += self.buckets[index]
                if freed >= need:
                    return self.shape.expiry_ms(index)
        return -1

    def add(self, cur: int, units: int) -> None:
        if self.oldest is None:
            self.oldest = cur - self.shape.span + 1
        self.buckets[cur] = self.buckets.get(cur, 0) + units
        self.total += units

    def give_back(self, bucket: int, units: int) -> int:
        left = self.buckets.get(bucket)
        if left is None:
            return 0
        units = min(units, left)
        if left - units <= 0:
            del self.buckets[bucket]
        else:
            self.buckets[bucket] = left - units
        self.total -= units
        return units
