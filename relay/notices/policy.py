"""Which recipients a notice reports after an attempt, and how: pure.

Honours NOTIFY (RFC 3461): NEVER reports nothing; without NOTIFY a recipient gets failure
and delay notices. SUCCESS gets a "relayed" report when the next hop did not take the DSN
parameters (it does not advertise DSN), as the relay reports the hand-over itself (RFC 3461
section 5.2.2); when it took them, the destination reports success and we send nothing. A message
from the null sender `<>` never causes a notice.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Literal

from relay.address import is_null_sender
from relay.notices.dsn import Action, RecipientReport
from relay.outcomes import AttemptPlan, RecipientOutcome
from relay.queue.model import DsnRequest

__all__ = ["NoticePlan", "plan_notice"]

EXPIRED_STATUS = "4.4.7"


@dataclass(frozen=True)
class NoticePlan:
    reports: tuple[RecipientReport, ...]
    kind: Literal["failure", "delay", "success"]
    delay: Literal["plain", "delay", "with-delay"]
    """How the notice relates to the message's one delay notice (see the queue's finish)."""


def plan_notice(
    plan: AttemptPlan,
    *,
    mail_from: str,
    dsn: DsnRequest,
    now: float,
    expires_at: float,
    delay_also: Iterable[RecipientOutcome] = (),
) -> NoticePlan | None:
    """The notice this attempt calls for, or None.

    `delay_also`: recipients of the message's other jobs still being retried, reported with
    this job's in the message's one delay notice.
    """
    if is_null_sender(mail_from):
        return None
    reports: list[RecipientReport] = []
    for outcome in plan.failed:
        if dsn.of(outcome.recipient).wants("FAILURE"):
            reports.append(_report(outcome, "failed", dsn, now))
    for outcome in plan.expired:
        if dsn.of(outcome.recipient).wants("FAILURE"):
            reports.append(_report(outcome, "failed", dsn, now, expired=True))
    failures = len(reports)
    if plan.delay_notice:
        for outcome in (*plan.deferred, *delay_also):
            if dsn.of(outcome.recipient).wants("DELAY"):
                report = _report(outcome, "delayed", dsn, now)
                reports.append(replace(report, will_retry_until=expires_at))
    delays = len(reports) - failures
    for outcome in plan.delivered:
        if dsn.of(outcome.recipient).wants("SUCCESS") and not outcome.dsn_passed:
            reports.append(_report(outcome, "relayed", dsn, now))
    if not reports:
        return None
    kind: Literal["failure", "delay", "success"] = (
        "failure" if failures else "delay" if delays else "success"
    )
    if not delays:
        relation: Literal["plain", "delay", "with-delay"] = "plain"
    else:
        relation = "delay" if len(reports) == delays else "with-delay"
    return NoticePlan(tuple(reports), kind, relation)


def _report(
    outcome: RecipientOutcome, action: Action, dsn: DsnRequest, now: float, expired: bool = False
) -> RecipientReport:
    diagnostic = outcome.text  # a local decision (DNS, no route) has no reply to quote
    if outcome.remote is not None:
        diagnostic = f"{outcome.code} {outcome.status} {outcome.text}".strip()
    if expired:
        diagnostic = f"delivery time expired; last error: {diagnostic}"
    return RecipientReport(
        recipient=outcome.recipient,
        action=action,
        status=EXPIRED_STATUS if expired else outcome.status,
        diagnostic=diagnostic,
        remote_mta=outcome.remote,
        smtp_reply=outcome.remote is not None and not expired,
        orcpt=dsn.of(outcome.recipient).orcpt,
        last_attempt=now,
    )
