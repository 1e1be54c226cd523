"""Emails about suspensions: to the account's contact (why, what to do) and to operators.

Composed here (pure), queued through our own queue with the null sender, so they are
retried like any mail, never bounce back, and count against no quota.
"""

from __future__ import annotations

import datetime as dt
import email.policy
import email.utils
from email.message import EmailMessage

import structlog

from relay.abuse.store import Suspension
from relay.address import domain_of
from relay.queue import Envelope, QueueStore

__all__ = ["Notifier", "compose"]

log = structlog.get_logger("relay.abuse")

SYSTEM_ACCOUNT = "system"
"""The queue's account for the relay's own mail (notices, alerts): held and counted never."""


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "any time"
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def compose(*, sender: str, to: str, subject: str, lines: list[str], now: float) -> bytes:
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = email.utils.formatdate(now, usegmt=True)
    message["Message-ID"] = email.utils.make_msgid(domain=domain_of(sender) or None)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no automatic replies to it
    message.set_content("\n".join(lines) + "\n")
    return message.as_bytes()


def suspended_lines(s: Suspension, support: str) -> list[str]:
    how = (
        "You can lift it yourself by changing the password of this login, or ask support."
        if s.terms.user_may_lift
        else "Only our support can lift it"
        + (f", not before {_when(s.terms.not_before)}." if s.terms.not_before else ".")
    )
    lines = [
        f"Sending through the relay with the login {s.account} is suspended.",
        "",
        f"Why: {s.reason} ({s.kind.value}, offence {s.terms.offence}).",
        f"Since: {_when(s.created_at)}. Reference: {s.id}.",
        "",
        how,
        "Mail you had already sent is held, not lost: it leaves when the suspension is lifted.",
    ]
    if s.terms.may_deny:
        lines.append("After repeated offences, reinstatement may be refused.")
    return [*lines, "", f"Support: {support}"]


class Notifier:
    def __init__(
        self, queue: QueueStore, *, sender: str, operators: tuple[str, ...], support: str
    ) -> None:
        self._queue = queue
        self._sender = sender
        self._operators = operators
        self.support = support

    async def send(self, to: str, subject: str, lines: list[str], now: float) -> str | None:
        if not to:
            return None
        body = compose(sender=self._sender, to=to, subject=subject, lines=lines, now=now)
        envelope = Envelope(mail_from="", recipients=(to,), account=SYSTEM_ACCOUNT)
        queue_id = await self._queue.enqueue(envelope, body)
        log.info("notice.queued", to=to, subject=subject, queue_id=queue_id)
        return queue_id

    async def alert(self, subject: str, lines: list[str], now: float) -> None:
        for operator in self._operators:
            await self.send(operator, f"[relay] {subject}", lines, now)

    async def suspended(self, s: Suspension, contact: str, now: float) -> None:
        subject = f"Your relay account {s.account} is suspended ({s.kind.value})"
        await self.send(contact, subject, suspended_lines(s, self.support), now)
        await self.alert(
            f"suspension {s.id}: {s.account} ({s.kind.value}, offence {s.terms.offence})",
            [
                f"Reason: {s.reason}",
                f"Evidence: {s.evidence}",
                f"Review: relay suspension show {s.id}",
            ],
            now,
        )

    async def lifted(self, s: Suspension, contact: str, now: float) -> None:
        await self.send(
            contact,
            f"Your relay account {s.account} can send again",
            [
                f"The suspension {s.id} ({s.reason}) was lifted: {s.close_reason}.",
                "Mail that was held is being delivered now.",
                "",
                "Each new suspension lasts longer; from the third, reinstatement may be refused.",
                f"Support: {self.support}",
            ],
            now,
        )

    async def denied(self, s: Suspension, contact: str, now: float) -> None:
        await self.send(
            contact,
            f"Your relay account {s.account} stays suspended",
            [
                f"Reinstatement after the suspension {s.id} ({s.reason}) was refused:"
                f" {s.close_reason}.",
                "The login can no longer send through the relay.",
                f"Support: {self.support}",
            ],
            now,
        )
