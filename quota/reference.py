"""The whole of quota/limits.lua in plain Python, for tests and explanations.

`ReferenceQuota` answers exactly as `QuotaStore` does for the same sequence of calls; the
property test in tests/test_quota_property.py drives both and compares every step.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from quota.decision import Decision, Verdict
from quota.plans import Plan, active_limits
from quota.window import DAY, MINUTE, Window

__all__ = ["ReferenceQuota", "recipient_slot"]


def recipient_slot(recipient: str, now_ms: int) -> tuple[str, int]:
    """The per-recipient counter a reservation goes to: (normalised address, minute)."""
    return recipient.lower(), DAY.bucket(now_ms)


@dataclass
class _Credential:
    day: Window = field(default_factory=lambda: Window(DAY))
    minute: Window = field(default_factory=lambda: Window(MINUTE))
    plans: dict[str, Plan] = field(default_factory=dict)
    suspended: tuple[str, bool] | None = None
    to_recipient: dict[tuple[str, int], int] = field(default_factory=lambda: defaultdict(int))
    reservations: dict[str, dict[tuple[str, object], int]] = field(default_factory=dict)


class ReferenceQuota:
    def __init__(self, *, default_per_minute: int, per_recipient: int) -> None:
        self.default_per_minute = default_per_minute
        self.per_recipient = per_recipient
        self._credentials: dict[str, _Credential] = defaultdict(_Credential)

    def add_plan(self, owner: str, plan: Plan) -> None:
        self._credentials[owner].plans[plan.id] = plan

    def remove_plan(self, owner: str, plan_id: str) -> None:
        self._credentials[owner].plans.pop(plan_id, None)

    def suspend(self, owner: str, reason: str, permanent: bool = False) -> None:
        self._credentials[owner].suspended = (reason, permanent)

    def unsuspend(self, owner: str) -> None:
        self._credentials[owner].suspended = None

    def reserve(self, owner: str, tx: str, recipient: str, now: float, units: int = 1) -> Decision:
        c = self._credentials[owner]
        now_ms = round(now * 1000)
        if c.suspended is not None:
            reason, permanent = c.suspended
            return Decision(Verdict.SUSPENDED, reason=reason, permanent=permanent)
        limits = active_limits(c.plans.values(), now, self.default_per_minute)
        if limits is None:
            return Decision(Verdict.EXPIRED)
        day, sec = DAY.bucket(now_ms), MINUTE.bucket(now_ms)
        used = c.day.slide(day)
        if used + units > limits.daily:
            at = c.day.frees_at(day, used + units - limits.daily)
            return Decision(Verdict.OVER_QUOTA, limit=limits.daily, retry_at=_seconds(at))
        recent = c.minute.slide(sec)
        if recent + units > limits.per_minute:
            at = c.minute.frees_at(sec, recent + units - limits.per_minute)
            return Decision(Verdict.OVER_RATE, limit=limits.per_minute, retry_at=_seconds(at))
        slot = recipient_slot(recipient, now_ms)
        if c.to_recipient[slot] + units > self.per_recipient:
            at = (day + 1) * DAY.width_ms
            return Decision(
                Verdict.OVER_RECIPIENT_RATE, limit=self.per_recipient, retry_at=_seconds(at)
            )
        c.day.add(day, units)
        c.minute.add(sec, units)
        c.to_recipient[slot] += units
        held = c.reservations.setdefault(tx, defaultdict(int))
        held[("d", day)] += units
        held[("s", sec)] += units
        held[("r", slot)] += units
        return Decision(Verdict.ALLOWED, limit=limits.daily, used=used + units)

    def commit(self, owner: str, tx: str) -> None:
        self._credentials[owner].reservations.pop(tx, None)

    def release(self, owner: str, tx: str, now: float) -> int:
        c = self._credentials[owner]
        now_ms = round(now * 1000)
        c.day.slide(DAY.bucket(now_ms))
        c.minute.slide(MINUTE.bucket(now_ms))
        returned = 0
        for (kind, where), units in c.reservations.pop(tx, {}).items():
            if kind == "d":
                assert isinstance(where, int)
                returned += c.day.give_back(where, units)
            elif kind == "s":
                assert isinstance(where, int)
                c.minute.give_back(where, units)
            elif kind == "r" and isinstance(where, tuple) and c.to_recipient.get(where, 0) > 0:
                c.to_recipient[where] -= units
                if c.to_recipient[where] <= 0:
                    del c.to_recipient[where]
        return returned

    def used(self, owner: str, now: float) -> int:
        """Units counted in the window now (read-only)."""
        c = self._credentials[owner]
        first = DAY.bucket(round(now * 1000)) - DAY.span + 1
        return sum(n for bucket, n in c.day.buckets.items() if bucket >= first)


def _seconds(ms: int) -> float | None:
    return ms / 1000 if ms >= 0 else None
