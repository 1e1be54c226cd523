"""Where the relay's state changes become an application's events: one call per place.

The delivery worker, the submission service and the complaint desk each hold one of these and
call it once where the state changes; it appends the events and keeps the suppression list.
It never raises: events and suppression are the application's view, and a Redis hiccup here
must not fail a delivery or a submission (the failure is logged).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import structlog

from relay.abuse.complaints import Complaint
from relay.clock import Clock
from relay.delivery.attempt import AttemptPlan
from relay.events import model
from relay.events.attempts import attempt_drafts
from relay.events.model import EventDraft, suppresses
from relay.events.stream import EventStream
from relay.events.suppression import SuppressionList
from relay.redis_client import Along

__all__ = ["EventRecorder", "reported_recipient"]

log = structlog.get_logger("relay.events")


class EventRecorder:
    def __init__(self, stream: EventStream, suppressions: SuppressionList, clock: Clock) -> None:
        self.stream = stream
        self.suppressions = suppressions
        self._clock = clock

    async def accepted(self, account: str, message_id: str, recipients: Iterable[str]) -> None:
        await self.stream.record(account, self._accepted(message_id, recipients))

    def accepted_along(self, account: str, message_id: str, recipients: Iterable[str]) -> Along:
        """`accepted`, sent with the enqueue of the message (no round trip of its own)."""
        return self.stream.along(account, self._accepted(message_id, recipients))

    def _accepted(self, message_id: str, recipients: Iterable[str]) -> list[EventDraft]:
        now = self._clock.now()
        return [EventDraft(model.ACCEPTED, message_id, rcpt, now) for rcpt in recipients]

    def attempted_along(self, account: str, message_id: str, plan: AttemptPlan) -> list[Along]:
        """A delivery attempt's events (delivered, bounced, expired, deferred), sent with
        the end of its job: no round trip of their own. They are sent even when the job's
        lease was lost meanwhile (its next attempt reports again): events are at least once."""
        now = self._clock.now()
        drafts = attempt_drafts(plan, message_id=message_id, now=now, delay_notice_sent=False)
        return [self.stream.along(account, drafts)] if drafts else []

    async def attempted_after(
        self, account: str, message_id: str, plan: AttemptPlan, *, delay_notice_sent: bool
    ) -> None:
        """What an attempt leaves once the end of its job is known (no Redis call in the
        usual case): the `delay_notice` events when it queued the sender's delay notice, and
        a 5.1.x bounce suppresses its recipient."""
        if delay_notice_sent and plan.deferred:
            now = self._clock.now()
            drafts = [
                EventDraft(model.DELAY_NOTICE, message_id, outcome.recipient, now)
                for outcome in plan.deferred
            ]
            await self.stream.record(account, drafts)
        for outcome in plan.failed:
            if suppresses(outcome.status):
                reply = f"{outcome.code} {outcome.status} {outcome.text}"
                await self.suppress(
                    account, outcome.recipient, f"bounced: {reply}", "bounce", message_id
                )

    async def complaint(
        self, account: str, message_id: str, recipient: str, reporter: str, feedback: str
    ) -> None:
        """A complaint about one of the account's messages: an event, and its recipient (when
        the report names one) is suppressed: a person who reported the mail as spam must
        not get more of it."""
        now = self._clock.now()
        data = {"reporter": reporter, "feedback_type": feedback}
        draft = EventDraft(model.COMPLAINT, message_id, recipient, now, data)
        await self.stream.record(account, [draft])
        if recipient:
            reason = f"complaint ({feedback}) from {reporter or 'unknown'}"
            await self.suppress(account, recipient, reason, "complaint", message_id)

    async def complained(self, account: str, complaint: Complaint) -> None:
        """The complaint desk's hook: see `complaint`."""
        await self.complaint(
            account,
            complaint.queue_id,
            reported_recipient(complaint.fields),
            complaint.reporter,
            complaint.feedback_type,
        )

    async def complained_evidence(self, account: str, evidence: dict[str, Any]) -> None:
        """A reviewed complaint an operator assigned to the account (its stored evidence)."""
        fields = evidence.get("fields")
        await self.complaint(
            account,
            str(evidence.get("queue_id") or ""),
            reported_recipient(fields if isinstance(fields, dict) else {}),
            str(evidence.get("reporter") or ""),
            str(evidence.get("feedback_type") or "abuse"),
        )

    async def quarantined(
        self, account: str, message_id: str, recipients: Iterable[str], reason: str
    ) -> None:
        """For content scanning: the message was held in quarantine instead of queued."""
        now = self._clock.now()
        data = {"reason": reason}
        drafts = [EventDraft(model.QUARANTINED, message_id, r, now, data) for r in recipients]
        await self.stream.record(account, drafts)

    async def suppress(
        self, account: str, address: str, reason: str, source: str, message_id: str = ""
    ) -> None:
        try:
            entry, new = await self.suppressions.add(
                account, address, reason=reason, source=source, message_id=message_id
            )
        except Exception as exc:  # see the module docstring
            log.error("suppression.add_failed", account=account, error=str(exc))
            return
        if new:
            log.info("suppression.added", account=account, source=source)
            data = {"reason": entry.reason, "source": source}
            draft = EventDraft(model.SUPPRESSED, message_id, entry.address, entry.at, data)
            await self.stream.record(account, [draft])


def reported_recipient(fields: dict[str, str]) -> str:
    """The recipient an ARF report names (`Original-Rcpt-To`, RFC 5965), or "" when it names
    none or something that is not one address (reports often redact it)."""
    value = fields.get("original-rcpt-to", "").strip()
    value = value.split(";", 1)[1].strip() if ";" in value else value
    value = value.strip("<>").strip()
    local, at, domain = value.rpartition("@")
    if not at or not local or "." not in domain or any(c.isspace() or c in ",<>" for c in value):
        return ""
    return value.lower()
