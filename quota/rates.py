"""Rates as config strings (`"100/min"`, `"1000/day"`) parsed into frozen values that round-trip."""

from __future__ import annotations

import re
from dataclasses import dataclass

from quota.errors import InvalidValue
from quota.units import Duration

__all__ = ["RateSpec"]

_PERIODS = {"s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600, "hour": 3600, "d": 86400, "day": 86400}
_CANONICAL = {1: "s", 60: "min", 3600: "h", 86400: "day"}


@dataclass(frozen=True)
class RateSpec:
    """`count` events per `period`."""

    count: int
    period: Duration

    def __post_init__(self) -> None:
        if self.count <= 0:
            raise InvalidValue(f"rate must be positive: {self.count}")
        if self.period.seconds <= 0:
            raise InvalidValue("rate period must be positive")

    @classmethod
    def parse(cls, text: str | RateSpec) -> RateSpec:
        if isinstance(text, RateSpec):
            return text
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d*)\s*([a-z]+)\s*", str(text).lower())
        if not match:
            raise InvalidValue(f"not a rate: {text!r} (use e.g. 100/min, 1000/day, 10/s)")
        count, multiple, unit = int(match.group(1)), match.group(2), match.group(3)
        if unit not in _PERIODS:
            raise InvalidValue(f"not a rate: {text!r} (unknown period {unit!r})")
        seconds = _PERIODS[unit] * (int(multiple) if multiple else 1)
        return cls(count, Duration(float(seconds)))

    def __str__(self) -> str:
        seconds = int(self.period.seconds)
        if seconds in _CANONICAL and seconds == self.period.seconds:
            return f"{self.count}/{_CANONICAL[seconds]}"
        return f"{self.count}/{self.period}"
