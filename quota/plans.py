"""Plans stack: the limits of a credential are the sums over the plans active now."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from quota.errors import InvalidValue

__all__ = ["Limits", "Plan", "active_limits"]


@dataclass(frozen=True)
class Plan:
    id: str
    daily: int
    """Recipients per rolling 24 hours."""
    per_minute: int | None = None
    """Recipients per rolling minute; None: the relay's default for one plan."""
    starts: float | None = None
    expires: float | None = None

    def __post_init__(self) -> None:
        if self.daily <= 0:
            raise InvalidValue(f"daily quota must be positive: {self.daily}")
        if self.per_minute is not None and self.per_minute <= 0:
            raise InvalidValue(f"per-minute limit must be positive: {self.per_minute}")
        if self.starts is not None and self.expires is not None and self.expires <= self.starts:
            raise InvalidValue("a plan must expire after it starts")

    def active(self, now: float) -> bool:
        return (self.starts is None or self.starts <= now) and (
            self.expires is None or now < self.expires
        )

    def as_dict(self, now: float) -> dict[str, object]:
        """What listings show (the CLI's `--json`, the HTTP API): the plan and whether it
        is active at `now`."""
        return {
            "id": self.id,
            "daily": self.daily,
            "per_minute": self.per_minute,
            "starts": self.starts,
            "expires": self.expires,
            "active": self.active(now),
        }

    def to_json(self) -> str:
        """The form the Lua store reads (cjson): the id is the hash field, not repeated."""
        return json.dumps(
            {
                k: v
                for k, v in (
                    ("daily", self.daily),
                    ("per_minute", self.per_minute),
                    ("starts", self.starts),
                    ("expires", self.expires),
                )
                if v is not None
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, plan_id: str, text: str) -> Plan:
        data = json.loads(text)
        return cls(
            id=plan_id,
            daily=int(data["daily"]),
            per_minute=data.get("per_minute"),
            starts=data.get("starts"),
            expires=data.get("expires"),
        )


@dataclass(frozen=True)
class Limits:
    daily: int
    per_minute: int


def active_limits(plans: Iterable[Plan], now: float, default_per_minute: int) -> Limits | None:
    """Sum of the active plans; None when no plan is active (the credential has expired)."""
    active = [p for p in plans if p.active(now)]
    if not active:
        return None
    return Limits(
        daily=sum(p.daily for p in active),
        per_minute=sum(p.per_minute or default_per_minute for p in active),
    )
