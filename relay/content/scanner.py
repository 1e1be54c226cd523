"""The scan at DATA: the spooled body to clamd and rspamd at once, each within its deadline,
then the verdict (relay.content.verdict) carried out: refuse, hold, or let it be queued.

Called once per message by the submission service, after the body is durable and before
the reply; it returns the final reply, or None to queue the message as usual. Nothing is
ever added to the message: scanner results stay in logs, counts and quarantine records.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from relay import replies
from relay.abuse.audit import AuditLog
from relay.abuse.service import SuspensionService
from relay.clock import Clock
from relay.content.clamd import ClamdClient
from relay.content.errors import ScannerUnavailable
from relay.content.lists import ListStore
from relay.content.message_file import MessageFile
from relay.content.quarantine import Held, Quarantined, QuarantineStore
from relay.content.rspamd import Envelope, RspamdClient
from relay.content.stats import ContentStats
from relay.content.verdict import (
    Action,
    MalwareResult,
    ScanPolicy,
    SpamResult,
    Verdict,
    decide,
    suspend_due,
)
from relay.errors import RelayError, StoreUnavailable
from relay.submission.service import Submitted
from reputation import Kind

if TYPE_CHECKING:
    from relay.events import EventRecorder

__all__ = ["ContentScanner", "MalwarePolicy"]

log = structlog.get_logger("relay.content")

ACTOR = "system:content-scan"


@dataclass(frozen=True)
class MalwarePolicy:
    suspend_after: int = 3
    """Malware messages of one account within `window` that suspend it (0: never)."""
    window: float = 86400.0


class ContentScanner:
    def __init__(
        self,
        *,
        clamd: ClamdClient | None,
        rspamd: RspamdClient | None,
        clamd_deadline: float = 30.0,
        rspamd_deadline: float = 15.0,
        policy: ScanPolicy,
        malware: MalwarePolicy,
        quarantine: QuarantineStore,
        stats: ContentStats,
        clock: Clock,
        lists: ListStore | None = None,
        audit: AuditLog | None = None,
        suspensions: SuspensionService | None = None,
        on_timing: Callable[[str, float], None] | None = None,
        events: EventRecorder | None = None,
    ) -> None:
        self._events = events
        """Records the `quarantined` event of each recipient (for the applications)."""
        self._clamd = clamd
        self._rspamd = rspamd
        self._clamd_deadline = clamd_deadline
        self._rspamd_deadline = rspamd_deadline
        self._policy = policy
        self._malware = malware
        self._quarantine = quarantine
        self._stats = stats
        self._clock = clock
        self._lists = lists
        self._audit = audit
        self._suspensions = suspensions
        self._on_timing = on_timing
        """(scanner, seconds) of every scan that answered: what the bench measures."""

    async def aclose(self) -> None:
        if self._rspamd is not None:
            await self._rspamd.aclose()

    async def __call__(self, message: Submitted, prefix: bytes) -> str | None:
        """The reply for this message, or None to queue it."""
        # One read of a small spool file for both scanners (clamd on a unix socket reads none).
        body = MessageFile(self._quarantine.spool.path(message.body.id), message.body.size)
        if self._clamd is None or self._rspamd is None:  # one scanner: no second task
            malware = await self._scan_malware(body)
            spam = await self._scan_spam(body, message)
        else:  # both at once: clamd in a task of its own, rspamd in this one
            clamd = asyncio.create_task(self._scan_malware(body))
            try:
                spam = await self._scan_spam(body, message)
                malware = await clamd
            except BaseException:
                clamd.cancel()
                raise
        allowed = False
        score = spam.score if spam is not None else None
        if (
            self._lists is not None
            and score is not None
            and self._policy.quarantine_at <= score < self._policy.reject_at
        ):
            allowed = await self._lists.allowed(
                message.account, message.mail_from, message.recipients
            )
        verdict = decide(malware=malware, spam=spam, policy=self._policy, allowed=allowed)
        return await self._carry_out(verdict, message, prefix)

    # --- the scanners, each within its deadline; a failure is a result, not an exception ---

    async def _scan_malware(self, body: MessageFile) -> MalwareResult | None:
        if self._clamd is None:
            return None
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._clamd_deadline):
                signature = await self._clamd.scan(body)
        except TimeoutError:
            deadline = self._clamd_deadline
            return MalwareResult(error=await self._failed("clamd", "timeout", deadline))
        except ScannerUnavailable as exc:
            return MalwareResult(error=await self._failed("clamd", "error", exc.reason))
        self._timed("clamd", started)
        return MalwareResult(signature=signature)

    async def _scan_spam(self, body: MessageFile, message: Submitted) -> SpamResult | None:
        if self._rspamd is None:
            return None
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._rspamd_deadline):
                check = await self._rspamd.check(
                    body,
                    Envelope(
                        ip=message.peer_ip,
                        helo=message.helo,
                        mail_from=message.mail_from,
                        recipients=message.recipients,
                        user=message.account,
                        queue_id=message.body.id,
                    ),
                )
        except TimeoutError:
            deadline = self._rspamd_deadline
            return SpamResult(error=await self._failed("rspamd", "timeout", deadline))
        except ScannerUnavailable as exc:
            return SpamResult(error=await self._failed("rspamd", "error", exc.reason))
        self._timed("rspamd", started)
        log.debug("content.spam_scored", score=check.score, symbols=",".join(check.symbols))
        return SpamResult(score=check.score)

    def _timed(self, scanner: str, started: float) -> None:
        if self._on_timing is not None:
            self._on_timing(scanner, time.perf_counter() - started)

    async def _failed(self, scanner: str, what: str, reason: str | float) -> str:
        """Log and count a scan without a verdict; the reason (a float: the deadline)."""
        if not isinstance(reason, str):
            reason = f"no verdict within {reason:g}s"
        on_error = (
            self._policy.malware_on_error if scanner == "clamd" else self._policy.spam_on_error
        )
        log.warning("content.scanner_failed", scanner=scanner, error=reason, then=on_error.value)
        await self._count(self._stats.failure(scanner, what))
        return reason

    # --- the verdict carried out ---

    async def _carry_out(self, verdict: Verdict, message: Submitted, prefix: bytes) -> str | None:
        account = message.account
        if verdict.action is Action.DELIVER:
            if verdict.allow_listed:
                log.info("content.allow_listed", account=account, score=verdict.score)
                await self._count(self._stats.spam(account, "allowed"))
            return None
        if verdict.action is Action.TEMPFAIL:
            return str(replies.SCAN_UNAVAILABLE)
        if verdict.action is Action.REJECT_SPAM:
            log.warning("content.spam_refused", account=account, score=verdict.score)
            await self._count(self._stats.spam(account, "reject"))
            return replies.SPAM_REJECTED.format(score=f"{verdict.score or 0.0:.1f}")
        if verdict.action is Action.QUARANTINE_SPAM:
            try:
                held = await self._hold(Held.SPAM, verdict.reason, message, prefix)
            except (RelayError, OSError) as exc:
                log.error("content.quarantine_failed", account=account, error=str(exc))
                return str(replies.STORE_UNAVAILABLE)
            log.info("content.spam_quarantined", account=account, id=held.id, score=verdict.score)
            await self._count(self._stats.spam(account, "quarantine"))
            return replies.QUARANTINED.format(queue_id=held.id)
        return await self._malware_found(verdict, message, prefix)

    async def _malware_found(self, verdict: Verdict, message: Submitted, prefix: bytes) -> str:
        """554 naming the signature, whatever else fails: the message is kept a year as
        evidence, the account is flagged (audit) and, past the count, suspended."""
        account, signature = message.account, verdict.signature or "unknown"
        held_id = "-"
        try:
            held = await self._hold(Held.MALWARE, signature, message, prefix)
            held_id = held.id
        except (RelayError, OSError) as exc:
            log.error("content.quarantine_failed", account=account, error=str(exc))
        log.warning("content.malware_refused", account=account, signature=signature, id=held_id)
        now = self._clock.now()
        hits = 0
        try:
            hits = await self._stats.malware(account, signature, now, self._malware.window)
            evidence = {
                "signature": signature,
                "quarantine_id": held_id,
                "mail_from": message.mail_from,
                "recipients": list(message.recipients[:20]),
                "hits_in_window": hits,
                "window_seconds": self._malware.window,
            }
            if self._audit is not None:
                await self._audit.append(
                    actor=ACTOR,
                    action="malware",
                    account=account,
                    subject=held_id,
                    reason=f"malware {signature} in outgoing mail",
                    evidence=evidence,
                )
            if self._suspensions is not None and suspend_due(hits, self._malware.suspend_after):
                await self._suspensions.suspend(
                    account,
                    Kind.ABUSE,
                    f"{hits} messages with malware within {self._malware.window / 3600:g} h"
                    f" (last: {signature})",
                    evidence,
                    actor=ACTOR,
                )
        except (StoreUnavailable, RelayError) as exc:
            log.error("content.flag_failed", account=account, error=str(exc))
        return replies.MALWARE_FOUND.format(signature=signature[:100], id=held_id)

    async def _hold(
        self, kind: Held, reason: str, message: Submitted, prefix: bytes
    ) -> Quarantined:
        held = await self._quarantine.hold(
            kind,
            body_id=message.body.id,
            size=message.body.size,
            head=message.body.head,
            account=message.account,
            mail_from=message.mail_from,
            recipients=message.recipients,
            reason=reason,
            prefix=prefix,
            dsn=message.dsn.to_json(),
        )
        if self._events is not None:  # never raises: events are advice
            await self._events.quarantined(
                message.account, held.id, message.recipients, f"{kind.value}: {reason}"
            )
        return held

    @staticmethod
    async def _count(call: Awaitable[None]) -> None:
        """A count that fails is logged; it never changes the reply."""
        try:
            await call
        except StoreUnavailable as exc:
            log.warning("content.count_failed", error=str(exc))
