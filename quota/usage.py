"""What a credential has used, as its owner and the operators see it: pure, from raw buckets."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from quota.plans import Plan, active_limits
from quota.window import DAY, MINUTE, WindowShape

__all__ = ["Usage", "compute_usage"]


@dataclass(frozen=True)
class Usage:
    used: int
    """Recipients counted in the rolling 24 h window."""
    daily: int
    """The quota now: the sum of the active plans (0 when none is)."""
    per_minute_used: int
    per_minute: int
    state: str
    """active, suspended (quota), expired, or suspended (<reason>)."""
    next_free_at: float | None
    """When the oldest counted recipient leaves the window (None: nothing counted)."""
    hourly: tuple[tuple[float, int], ...]
    """(hour start, recipients) for every clock hour the window touches, oldest first."""
    plans: tuple[Plan, ...]
    active_plans: frozenset[str]

    @property
    def remaining(self) -> int:
        return max(0, self.daily - self.used)

    def as_dict(self) -> dict[str, object]:
        return {
            "used": self.used,
            "daily": self.daily,
            "remaining": self.remaining,
            "per_minute_used": self.per_minute_used,
            "per_minute": self.per_minute,
            "state": self.state,
            "next_free_at": self.next_free_at,
            "hourly": [{"hour": start, "recipients": n} for start, n in self.hourly],
            "plans": [
                {
                    "id": p.id,
                    "daily": p.daily,
                    "per_minute": p.per_minute,
                    "starts": p.starts,
                    "expires": p.expires,
                    "active": p.id in self.active_plans,
                }
                for p in self.plans
            ],
        }


def _live(buckets: Mapping[int, int], shape: WindowShape, now_ms: int) -> dict[int, int]:
    first = shape.bucket(now_ms) - shape.span + 1
    return {b: n for b, n in buckets.items() if b >= first and n > 0}


def compute_usage(
    *,
    day_buckets: Mapping[int, int],
    minute_buckets: Mapping[int, int],
    plans: Iterable[Plan],
    suspended: str | None,
    now: float,
    default_per_minute: int,
) -> Usage:
    plans = tuple(sorted(plans, key=lambda p: (p.starts or 0, p.id)))
    now_ms = round(now * 1000)
    day = _live(day_buckets, DAY, now_ms)
    minute = _live(minute_buckets, MINUTE, now_ms)
    used = sum(day.values())
    limits = active_limits(plans, now, default_per_minute)
    daily = limits.daily if limits else 0
    if suspended:
        state = f"suspended ({suspended})"
    elif limits is None:
        state = "expired"
    elif used >= daily:
        state = "suspended (quota)"
    else:
        state = "active"
    oldest = min(day) if day else None
    hour_ms = 3_600_000
    this_hour = now_ms // hour_ms
    hourly = {h: 0 for h in range(this_hour - 24, this_hour + 1)}
    for bucket, count in day.items():
        hour = bucket * DAY.width_ms // hour_ms
        if hour in hourly:
            hourly[hour] += count
    return Usage(
        used=used,
        daily=daily,
        per_minute_used=sum(minute.values()),
        per_minute=limits.per_minute if limits else 0,
        state=state,
        next_free_at=DAY.expiry_ms(oldest) / 1000 if oldest is not None else None,
        hourly=tuple((h * 3600.0, n) for h, n in hourly.items()),
        plans=plans,
        active_plans=frozenset(p.id for p in plans if p.active(now)),
    )
