"""What to do with a job after one attempt: pure, over plain values."""

from __future__ import annotations

from dataclasses import dataclass

from relay.delivery.outcome import Disposition, RecipientOutcome

__all__ = ["AttemptResult", "Done", "Retry", "after_attempt"]


@dataclass(frozen=True)
class Done:
    """Nothing left to try: every recipient delivered or failed for good."""

    failed: tuple[RecipientOutcome, ...]


@dataclass(frozen=True)
class Retry:
    pending: tuple[str, ...]
    due_at: float
    error: str
    failed: tuple[RecipientOutcome, ...]


AttemptResult = Done | Retry


def after_attempt(
    outcomes: list[RecipientOutcome], *, now: float, retry_interval: float
) -> AttemptResult:
    failed = tuple(o for o in outcomes if o.disposition is Disposition.PERMANENT)
    deferred = [o for o in outcomes if o.disposition is Disposition.TRANSIENT]
    if not deferred:
        return Done(failed=failed)
    first = deferred[0]
    error = f"{first.code} {first.status} {first.text}"
    return Retry(
        pending=tuple(o.recipient for o in deferred),
        due_at=now + retry_interval,
        error=error,
        failed=failed,
    )
