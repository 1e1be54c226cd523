"""What is done with quarantined mail: release (through the normal queue, on the quota,
audited), delete, the expiry sweep and the weekly digest; and the supervised part of
`relay run` that does the last two on time.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
import structlog

from quota import QuotaStore, QuotaUnavailable
from relay.abuse.audit import AuditLog
from relay.abuse.notify import Notifier
from relay.accounts import AccountStore
from relay.clock import Clock
from relay.content.errors import KeptAsEvidence, ReleaseRefused
from relay.content.quarantine import Held, Quarantined, QuarantineStore
from relay.errors import RelayError, StoreUnavailable
from relay.queue import DsnRequest, Envelope, QueueStore
from relay.redis_client import store_errors
from relay.spool import Spooled
from relay.submission import policy

__all__ = ["QuarantineDesk", "digest_lines"]

log = structlog.get_logger("relay.content")


def _day(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def digest_lines(account: str, held: list[Quarantined], support: str) -> list[str]:
    """The weekly summary of an account's quarantine (pure): one line per message."""
    spam = [q for q in held if q.kind is Held.SPAM]
    malware = [q for q in held if q.kind is Held.MALWARE]
    lines = [
        f"Mail sent with the login {account} that the relay held instead of delivering:",
        f"{len(spam)} suspected spam, {len(malware)} with malware.",
        "",
    ]
    for q in sorted(held, key=lambda q: q.created_at):
        to = ", ".join(q.recipients[:3]) + (
            f" (+{len(q.recipients) - 3})" if len(q.recipients) > 3 else ""
        )
        lines.append(
            f"- {q.id}  {_day(q.created_at)}  {q.kind.value} ({q.reason})  to {to}"
            f"  subject: {q.subject or '(none)'}  kept until {_day(q.expires_at)}"
        )
    lines.append("")
    if spam:
        lines.append(
            "Suspected spam can be delivered or deleted from your page on the relay's web"
            ' site (Home, "Mail held by the content scan"), or by support with its'
            " reference; otherwise it is deleted when its time is up."
        )
    if malware:
        lines.append(
            "Mail with malware is never delivered by request of the sender: it is kept one"
            " year for investigation. If you did not send it, change your password now."
        )
    return [*lines, "", f"Support: {support}"]


class QuarantineDesk:
    def __init__(
        self,
        *,
        store: QuarantineStore,
        queue: QueueStore,
        quota: QuotaStore,
        audit: AuditLog,
        notifier: Notifier,
        accounts: AccountStore,
        clock: Clock,
    ) -> None:
        self.store = store
        self._queue = queue
        self._quota = quota
        self._audit = audit
        self._notifier = notifier
        self._accounts = accounts
        self._clock = clock

    async def release(self, qid: str, *, actor: str, operator: bool) -> str:
        """Queue a held message for delivery, once: its queue id. Malware only by an
        operator. Its recipients count on the account's quota like new mail (refused when
        over it, and it stays held)."""
        if not operator:
            await self._not_evidence(qid, "release")
        record = await self.store.claim(qid)
        try:
            queue_id = await self._enqueue(record)
        except BaseException:
            await self.store.unclaim(qid)
            raise
        await self.store.forget(record)
        await self._audit.append(
            actor=actor,
            action="quarantine-release",
            account=record.account,
            subject=qid,
            reason=f"{record.kind.value} ({record.reason}) released",
            evidence={"recipients": list(record.recipients[:20]), "size": record.size},
        )
        log.info("content.released", id=qid, account=record.account, actor=actor)
        return queue_id

    async def _enqueue(self, record: Quarantined) -> str:
        tx, now = self._quota.new_transaction(), self._clock.now()
        try:
            for recipient in record.recipients:
                decision = await self._quota.reserve(record.account, tx, recipient, now)
                refusal = policy.refusal(decision, recipient, now)
                if refusal is not None:
                    await self._quota.release(record.account, tx, now)
                    raise ReleaseRefused(f"{record.id} not released: {refusal}")
        except QuotaUnavailable as exc:
            raise StoreUnavailable(str(exc)) from None
        envelope = Envelope(
            mail_from=record.mail_from,
            recipients=record.recipients,
            account=record.account,
            dsn=DsnRequest.from_json(record.dsn),
            sender_verified=record.sender_verified,
        )
        body = Spooled(record.id, record.size, b"", None)
        try:
            queue_id = await self._queue.enqueue_spooled(envelope, body, record.prefix)
        except BaseException:
            await self._quota.release(record.account, tx, now)
            raise
        try:
            await self._quota.commit(record.account, tx)
        except QuotaUnavailable as exc:  # queued: the reservation stays counted anyway
            log.warning("quota.commit_failed", account=record.account, error=str(exc))
        return queue_id

    async def _not_evidence(self, qid: str, verb: str) -> None:
        """KeptAsEvidence when `qid` carries malware (asked by someone not an operator)."""
        record = await self.store.get(qid)
        if record.kind is Held.MALWARE:
            raise KeptAsEvidence(
                f"{qid} carries malware ({record.reason}): it is kept one year for"
                f" investigation; only an operator can {verb} it"
            )

    async def delete(self, qid: str, *, actor: str, operator: bool = True) -> Quarantined:
        """Remove it and its body. Malware only by an operator (it is evidence)."""
        if not operator:
            await self._not_evidence(qid, "delete")
        record = await self.store.delete(qid)
        await self._audit.append(
            actor=actor,
            action="quarantine-delete",
            account=record.account,
            subject=qid,
            reason=f"{record.kind.value} ({record.reason}) deleted",
        )
        log.info("content.deleted", id=qid, account=record.account, actor=actor)
        return record

    async def sweep(self) -> int:
        """Delete this node's quarantined messages whose retention is over."""
        removed = 0
        for qid in await self.store.expired(self._clock.now()):
            try:
                record = await self.store.get(qid)
            except RelayError:  # gone meanwhile (released, deleted)
                continue
            self.store.spool.remove(qid)
            await self.store.forget(record)
            removed += 1
            log.info("content.expired", id=qid, account=record.account, kind=record.kind.value)
        return removed

    async def send_digests(self, support: str) -> int:
        """One summary per account with mail in quarantine, to its contact address."""
        sent = 0
        now = self._clock.now()
        for login in await self.store.accounts():
            held = await self.store.listing(account=login)
            account = await self._accounts.get(login)
            if not held or account is None or not account.email:
                continue
            subject = f"Your relay quarantine: {len(held)} message(s) held for {login}"
            await self._notifier.send(
                account.email, subject, digest_lines(login, held, support), now
            )
            sent += 1
        return sent

    async def run(
        self,
        stop: asyncio.Event,
        redis: aioredis.Redis,
        *,
        sweep_every: float,
        digest_every: float,
        support: str,
        check_every: float = 300.0,
    ) -> None:
        """The supervised part: every `check_every`, the sweep once per `sweep_every` for
        this node and the digests once per `digest_every` for everyone, whichever process
        of the node (or of the cluster, for digests) takes the turn first (SET NX EX)."""
        node = self.store.node
        while not stop.is_set():
            try:
                await self._turn(redis, f"content:turn:sweep:{node}", sweep_every, self.sweep)
                if digest_every > 0:
                    await self._turn(
                        redis,
                        "content:turn:digest",
                        digest_every,
                        lambda: self.send_digests(support),
                    )
            except (StoreUnavailable, OSError, RelayError) as exc:
                log.warning("content.housekeeping_failed", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), check_every)

    async def _turn(
        self, redis: aioredis.Redis, key: str, every: float, work: Callable[[], Awaitable[int]]
    ) -> None:
        with store_errors():
            mine = await redis.set(key, repr(self._clock.now()), nx=True, ex=max(1, int(every)))
        if mine:
            done = await work()
            log.info("content.housekeeping", task=key.split(":")[2], count=done)
