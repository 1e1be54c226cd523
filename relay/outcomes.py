"""What one delivery attempt came to, per recipient and for the job: plain values.

Delivery produces them (relay/delivery/) and notices read them (relay/notices/); they live
here, below both, so that neither package imports the other for its types.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = ["AttemptPlan", "Disposition", "RecipientOutcome"]


class Disposition(Enum):
    DELIVERED = "delivered"
    TRANSIENT = "transient"
    PERMANENT = "permanent"


@dataclass(frozen=True)
class RecipientOutcome:
    recipient: str
    disposition: Disposition
    code: int
    status: str
    """Enhanced status code (RFC 3463), e.g. "4.4.1"."""
    text: str
    """Reply text without code and enhanced status, or a description of the local error."""
    remote: str | None
    """Name of the hop (MX host) that gave the outcome; None when none was reached."""
    egress_ip: str | None
    tls: bool
    dsn_passed: bool = False
    """The next hop took the sender's DSN parameters (RFC 3461): it reports success, not us."""
    tls_policy: str = ""
    """The TLS policy that applied ("opportunistic", "rule gmail: required", "mta-sts
    enforce"...); "" when no server was tried."""


@dataclass(frozen=True)
class AttemptPlan:
    delivered: tuple[RecipientOutcome, ...]
    failed: tuple[RecipientOutcome, ...]
    """Permanent failures (5xx, bad domain)."""
    expired: tuple[RecipientOutcome, ...]
    """Temporary failures of a message past its max age: they fail now too."""
    deferred: tuple[RecipientOutcome, ...]
    """Still being retried, at `retry_at`."""
    retry_at: float | None
    delay_notice: bool
    """The sender is due a delay notice for `deferred` (if not sent already)."""

    @property
    def done(self) -> bool:
        return not self.deferred

    @property
    def pending(self) -> tuple[str, ...]:
        return tuple(o.recipient for o in self.deferred)

    @property
    def error(self) -> str:
        first = self.deferred[0] if self.deferred else None
        return f"{first.code} {first.status} {first.text}" if first else ""
