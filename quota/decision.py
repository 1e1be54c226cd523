"""The answer to "may this credential send to one more recipient now?"."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = ["Decision", "Verdict"]


class Verdict(Enum):
    ALLOWED = 0
    OVER_QUOTA = 1
    """The rolling 24 h quota is used up: the credential is suspended (quota) until it frees."""
    OVER_RATE = 2
    """Too many recipients in the last minute."""
    OVER_RECIPIENT_RATE = 3
    """Too many messages to this one recipient this minute."""
    EXPIRED = 4
    """No active plan."""
    SUSPENDED = 5
    """Suspended by a person or a rule (reputation, abuse, admin)."""
    BLOCKED = 6
    """The recipient is on a list the caller named (the relay's suppression list); the
    list's entry is the decision's `reason`. Nothing is reserved."""


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    limit: int = 0
    """The limit that decided: the daily quota when allowed or over quota, else the rate."""
    used: int = 0
    """Units used in the last 24 h, this reservation included (when allowed)."""
    retry_at: float | None = None
    """When the refused unit would fit (seconds since the epoch); None: not by waiting."""
    reason: str = ""
    permanent: bool = False

    @property
    def allowed(self) -> bool:
        return self.verdict is Verdict.ALLOWED
