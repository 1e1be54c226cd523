"""Where complaints go: against the account they are traced to, or to an operator's review.

A complaint suspends on its own only when `attribute` names the account; otherwise it waits
in the review queue until an operator assigns it to a login (then it is that account's
complaint, as if given with the login) or dismisses it. Every step is audited.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog

from relay.abuse.complaints import Complaint, TraceStore, attribute
from relay.abuse.review import Review, ReviewStore
from relay.abuse.service import SuspensionService
from relay.abuse.store import Suspension
from relay.accounts import AccountStore
from relay.clock import Clock
from relay.safe_text import clean_line
from reputation import Kind

if TYPE_CHECKING:
    from relay.events import EventRecorder

__all__ = ["ComplaintDesk"]

log = structlog.get_logger("relay.abuse")


class ComplaintDesk:
    def __init__(
        self,
        *,
        suspensions: SuspensionService,
        traces: TraceStore,
        reviews: ReviewStore,
        accounts: AccountStore,
        clock: Clock,
        events: EventRecorder | None = None,
    ) -> None:
        self._suspensions = suspensions
        self._events = events
        """The account's `complaint` event, and its recipient suppressed (None: neither)."""
        self._traces = traces
        self.reviews = reviews
        self._accounts = accounts
        self._clock = clock

    async def receive(self, complaint: Complaint, *, actor: str) -> Suspension | Review:
        """Suspend the account the complaint is traced to, or queue it for review."""
        trace = None
        if complaint.queue_id and not complaint.problem:
            trace = await self._traces.find(complaint.queue_id)
        verdict = attribute(complaint, trace)
        problem = verdict.problem
        if verdict.account:
            if await self._accounts.get(verdict.account) is not None:
                return await self.against(
                    verdict.account, complaint, actor=actor, extra={"attributed": "trace"}
                )
            problem = f"account {verdict.account} of queue id {complaint.queue_id} is gone"
        review = Review(
            id=self.reviews.new_id(),
            created_at=self._clock.now(),
            actor=actor,
            problem=clean_line(problem),
            traced_to=trace.account if trace else "",
            evidence=complaint.as_evidence(),
        )
        await self.reviews.add(review)
        await self._suspensions.audit.append(
            actor=actor,
            action="complaint-review",
            subject=review.id,
            reason=problem,
            evidence=review.evidence,
        )
        log.info(
            "complaint.review",
            review=review.id,
            problem=review.problem,
            queue_id=complaint.queue_id,
            actor=actor,
        )
        return review

    async def against(
        self,
        login: str,
        complaint: Complaint,
        *,
        actor: str,
        extra: dict[str, Any] | None = None,
    ) -> Suspension:
        """The complaint is the account's: suspend it (or add evidence to its open one)."""
        evidence = complaint.as_evidence()
        suspension = await self._suspensions.suspend(
            login, Kind.ABUSE, _reason(evidence), {**evidence, **(extra or {})}, actor=actor
        )
        if self._events is not None:
            await self._events.complained(login, complaint)
        return suspension

    async def assign(
        self, rid: str, login: str, *, actor: str, reason: str
    ) -> tuple[Review, Suspension]:
        """An operator decides the complaint is `login`'s: handled as its complaint."""
        await self._accounts.require(login)
        review = await self.reviews.claim(rid, actor)
        try:
            suspension = await self._suspensions.suspend(
                login,
                Kind.ABUSE,
                _reason(review.evidence),
                {**review.evidence, "review": rid, "assigned_because": reason},
                actor=actor,
            )
        except BaseException:
            await self.reviews.unclaim(rid)
            raise
        if self._events is not None:
            await self._events.complained_evidence(login, review.evidence)
        closed = await self.reviews.close(
            review,
            status="assigned",
            at=self._clock.now(),
            by=actor,
            reason=clean_line(reason),
            account=login,
            suspension=suspension.id,
        )
        await self._suspensions.audit.append(
            actor=actor, action="complaint-assign", account=login, subject=rid, reason=reason
        )
        log.warning("complaint.assigned", review=rid, account=login, actor=actor)
        return closed, suspension

    async def dismiss(self, rid: str, *, actor: str, reason: str) -> Review:
        """An operator decides the complaint is no account's (forged, not ours, a mistake)."""
        review = await self.reviews.claim(rid, actor)
        closed = await self.reviews.close(
            review, status="dismissed", at=self._clock.now(), by=actor, reason=clean_line(reason)
        )
        await self._suspensions.audit.append(
            actor=actor, action="complaint-dismiss", subject=rid, reason=reason
        )
        log.info("complaint.dismissed", review=rid, actor=actor)
        return closed


def _reason(evidence: dict[str, Any]) -> str:
    kind = evidence.get("feedback_type") or "abuse"
    return f"spam complaint ({kind}) from {evidence.get('reporter') or 'unknown'}"
