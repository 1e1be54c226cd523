"""Durations as small frozen values that parse from and print back to config strings."""

from __future__ import annotations

import re
from dataclasses import dataclass

from quota.errors import InvalidValue

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


@dataclass(frozen=True, order=True)
class Duration:
    """A non-negative span of time. `Duration.parse("1h30m")` and `str()` round-trip."""

    seconds: float

    def __post_init__(self) -> None:
        if self.seconds < 0:
            raise InvalidValue(f"duration must not be negative: {self.seconds}")

    @classmethod
    def parse(cls, text: str | int | float | Duration) -> Duration:
        """Parse `"15m"`, `"7d"`, `"1h30m"`, `"250ms"`, or a plain number of seconds."""
        if isinstance(text, Duration):
            return text
        if isinstance(text, bool):
            raise InvalidValue(f"not a duration: {text!r}")
        if isinstance(text, int | float):
            return cls(float(text))
        value = text.strip().lower().replace(" ", "")
        if not value:
            raise InvalidValue("empty duration")
        if re.fullmatch(r"\d+(\.\d+)?", value):
            return cls(float(value))
        pos, total = 0, 0.0
        for match in _PART.finditer(value):
            if match.start() != pos:
                break
            total += float(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if pos != len(value):
            raise InvalidValue(f"not a duration: {text!r} (use e.g. 30s, 15m, 1h30m, 7d, 250ms)")
        return cls(total)

    def __str__(self) -> str:
        remaining = round(self.seconds * 1000)
        if remaining == 0:
            return "0s"
        parts = []
        for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
            count, remaining = divmod(remaining, size)
            if count:
                parts.append(f"{count}{unit}")
        if remaining:
            parts.append(f"{remaining}ms")
        return "".join(parts)
