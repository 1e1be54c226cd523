"""What to do with a job after one attempt: pure, over plain values."""

from __future__ import annotations

from relay.delivery.schedule import RetrySchedule
from relay.outcomes import AttemptPlan, Disposition, RecipientOutcome

__all__ = ["AttemptPlan", "after_attempt"]


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
