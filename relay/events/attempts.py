"""The events of one delivery attempt, from the retry schedule's plan: pure."""

from __future__ import annotations

from typing import Any

from relay.delivery.attempt import AttemptPlan
from relay.delivery.outcome import RecipientOutcome
from relay.events import model
from relay.events.model import EventDraft

__all__ = ["attempt_drafts"]


def _reply(outcome: RecipientOutcome) -> dict[str, Any]:
    data: dict[str, Any] = {"reply": f"{outcome.code} {outcome.status} {outcome.text}".strip()}
    if outcome.egress_ip:
        data["egress_ip"] = outcome.egress_ip
    if outcome.remote:
        data["mx"] = outcome.remote
    return data


def attempt_drafts(
    plan: AttemptPlan, *, message_id: str, now: float, delay_notice_sent: bool
) -> list[EventDraft]:
    """delivered / bounced / expired / deferred per recipient, then `delay_notice` for the
    recipients still pending when the sender's delay notice was queued by this attempt."""
    drafts: list[EventDraft] = []

    def add(kind: str, outcome: RecipientOutcome, **extra: Any) -> None:
        data = _reply(outcome) | extra
        drafts.append(EventDraft(kind, message_id, outcome.recipient, now, data))

    for outcome in plan.delivered:
        add(model.DELIVERED, outcome, tls=outcome.tls)
    for outcome in plan.failed:
        add(model.BOUNCED, outcome)
    for outcome in plan.expired:
        add(model.EXPIRED, outcome)
    for outcome in plan.deferred:
        add(model.DEFERRED, outcome, next_attempt=plan.retry_at)
    if delay_notice_sent:
        for outcome in plan.deferred:
            drafts.append(EventDraft(model.DELAY_NOTICE, message_id, outcome.recipient, now))
    return drafts
