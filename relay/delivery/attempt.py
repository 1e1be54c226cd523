"""What to do with a job after one attempt: pure, over plain values."""

from __future__ import annotations

from dataclasses import dataclass

from relay.delivery.outcome import Disposition, RecipientOutcome
from relay.delivery.schedule import RetrySchedule

__all__ = ["AttemptPlan", "after_attempt"]


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


def after_attempt(
    outcomes: list[RecipientOutcome],
    *,
    now: float,
    created_at: float,
    schedule: RetrySchedule,
    held_for: float = 0.0,
    delay_notified: bool = False,
    attempt: int = 1,
) -> AttemptPlan:
    """`attempt`: this attempt's number (1: the first), for a retry curve."""
    delivered = tuple(o for o in outcomes if o.disposition is Disposition.DELIVERED)
    failed = tuple(o for o in outcomes if o.disposition is Disposition.PERMANENT)
    transient = tuple(o for o in outcomes if o.disposition is Disposition.TRANSIENT)
    retry_at = schedule.next_attempt(now, created_at, held_for, attempt) if transient else None
    if transient and retry_at is None:
        return AttemptPlan(delivered, failed, transient, (), None, False)
    delay = (
        bool(transient)
        and not delay_notified
        and schedule.delay_notice_due(now, created_at, held_for)
    )
    return AttemptPlan(delivered, failed, (), transient, retry_at, delay)
