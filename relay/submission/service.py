"""What the submission server decides, without sockets: auth, recipient checks, acceptance."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Literal, Protocol

import structlog

from quota import QuotaStore, QuotaUnavailable, Verdict
from relay import metrics, replies
from relay.abuse.content import from_addresses
from relay.accounts import Account, AccountStore, unknown_login
from relay.address import domain_of, domain_text, is_mailbox, is_null_sender
from relay.clock import Clock
from relay.config import SubmissionSettings
from relay.errors import StoreUnavailable
from relay.events.suppression import Suppressed, SuppressionList
from relay.queue import DsnRequest, Envelope, QueueStore, RecipientDsn
from relay.redis_client import Along
from relay.safe_text import clean_line
from relay.sender_auth.identities import IdentityCache, IdentityMode
from relay.sender_auth.spf import SpfChecker
from relay.spool import Incoming, Spooled, SpoolError
from relay.submission import policy
from relay.submission.message import message_id_of, missing_headers, received_header

if TYPE_CHECKING:
    from relay.events import EventRecorder

__all__ = ["Refusal", "Submission", "SubmissionService", "Submitted"]

log = structlog.get_logger("relay.submission")

ContentCheck = Callable[[str, str, bytes], Awaitable[str | None]]
"""(account, mail_from, body) → a refusal reply, or None to accept."""

ContentScan = Callable[["Submitted", bytes], Awaitable[str | None]]
"""(message, header lines to add) → the final reply (refused, or held in quarantine), or
None to queue it: relay.content.ContentScanner."""


class ListCheck(Protocol):
    """Deny lists at MAIL and RCPT: relay.content.lists.ListStore."""

    async def sender_refusal(self, account: str, address: str) -> str | None: ...

    async def recipient_refusal(self, account: str, address: str) -> str | None: ...


class DkimSign(Protocol):
    """The DKIM signer as acceptance uses it (relay.sender_auth.DkimSigner)."""

    async def __call__(self, headers: bytes, body_hash: str, account: str) -> bytes:
        """The DKIM-Signature field, or b"" when the account owns no key for the From:."""
        ...

    async def signs_for(self, account: str) -> bool:
        """Whether the account owns any key: only then is its body hashed as it arrives."""
        ...


CONTENT_SAMPLE = 4 << 20
"""Bytes of a message the content check reads (link extraction stops earlier anyway)."""


@dataclass(frozen=True)
class Submitted:
    """One complete transaction, as the server hands it over after DATA."""

    account: str
    mail_from: str
    recipients: tuple[str, ...]
    body: Spooled
    """The content as received, durable in the spool."""
    peer_ip: str
    helo: str
    dsn: DsnRequest = field(default_factory=DsnRequest)
    """RET/ENVID and NOTIFY/ORCPT as the client gave them (RFC 3461)."""
    protocol: str = "ESMTPSA"
    """As the `Received:` line names the door it came in by (RFC 3848; "HTTPSA": the API)."""


RefusalKind = Literal[
    "address", "dsn", "too_many", "suppressed", "denied", "unavailable", "limit", "account"
]


@dataclass(frozen=True)
class Refusal:
    """A recipient refused, with what an HTTP client needs beyond the SMTP reply: why (a
    limit is 429, the account 403, the address 422) and when a limit frees up."""

    reply: str
    kind: RefusalKind
    retry_at: float | None = None


class Submission(Protocol):
    """What the SMTP handler needs; tests can drive the server with a fake."""

    async def authenticate(
        self,
        login: str,
        password: str,
        *,
        known: bool = False,
        before_hash: Callable[[], Awaitable[None]] | None = None,
    ) -> Account | None: ...

    async def log_name(self, login: str) -> str: ...

    def no_room(self, login: str, password: str, known: bool) -> bool: ...

    async def check_sender(
        self, account: str, address: str, tx: str, ret: str | None = None
    ) -> str | None: ...

    def new_transaction(self) -> str: ...

    async def receive(self, account: str) -> Incoming | str: ...

    async def check_recipient(
        self, account: str, address: str, accepted: int, tx: str, dsn: RecipientDsn | None = None
    ) -> str | None: ...

    async def accept(self, tx: str, message: Submitted) -> str: ...

    async def release(self, account: str, tx: str) -> None: ...


class SubmissionService:
    def __init__(
        self,
        *,
        accounts: AccountStore,
        queue: QueueStore,
        quota: QuotaStore,
        settings: SubmissionSettings,
        hostname: str,
        clock: Clock,
        store_timeout: float,
        on_queued: Callable[[], None] = lambda: None,
        content_check: ContentCheck | None = None,
        trace: Callable[..., None] | None = None,
        spf: SpfChecker | None = None,
        spf_mode: str = "off",
        dkim: DkimSign | None = None,
        identities: IdentityCache | None = None,
        identities_mode: IdentityMode = "off",
        min_free: int = 0,
        events: EventRecorder | None = None,
        content_scan: ContentScan | None = None,
        lists: ListCheck | None = None,
        draining: Callable[[], bool] | None = None,
    ) -> None:
        self._accounts = accounts
        self._queue = queue
        self._quota = quota
        self._settings = settings
        self._hostname = hostname
        self._clock = clock
        self._store_timeout = store_timeout
        self._on_queued = on_queued
        self._content_check = content_check
        """Blocklist check of sender and link domains; a reply refuses the message."""
        self._trace = trace
        """Adds to the enqueue's pipeline what remembers queue id → account and Message-ID
        (`TraceStore.stage_remember`), to find the sender of a message complained about."""
        self._spf = spf
        self._spf_mode = spf_mode
        self._dkim = dkim
        """(header section, body hash, account) → a DKIM-Signature field when the account owns
        the From: domain's key, else b""."""
        self._min_free = min_free
        """Free bytes the spool's disk keeps; below, DATA is refused (452 4.3.1)."""
        self._events = events
        """The application's events (`accepted`) and the suppression list checked at RCPT
        (None: neither)."""
        self._identities = identities if identities_mode != "off" else None
        self._identities_mode = identities_mode
        """Sender identities (sender_auth.identities); without a cache, or "off", nothing is
        checked and every sender is treated as verified (the behaviour before identities)."""
        self._content_scan = content_scan
        self._lists = lists
        self._draining = draining
        """Whether the node is draining (`relay.node.drain`, a read of shared memory): new
        transactions, whatever door they come by, are refused."""
        self._headers: dict[str, bytes] = {}
        """Transaction → header lines to add at acceptance (the SPF warning)."""
        self._senders: dict[str, tuple[str, bool]] = {}
        """Transaction → (sender domain, verified identity?): only a verified sender gets
        notices, and may ask for NOTIFY=SUCCESS."""

    async def authenticate(
        self,
        login: str,
        password: str,
        *,
        known: bool = False,
        before_hash: Callable[[], Awaitable[None]] | None = None,
    ) -> Account | None:
        """See `AccountStore.authenticate` (raises `Busy` when the hashing queue is full)."""
        async with asyncio.timeout(self._store_timeout + 5.0):  # + time to hash
            return await self._accounts.authenticate(
                login, password, known=known, before_hash=before_hash
            )

    def no_room(self, login: str, password: str, known: bool) -> bool:
        """See `AccountStore.no_room`."""
        return self._accounts.no_room(login, password, known=known)

    async def log_name(self, login: str) -> str:
        """The login as logs may show it: itself for an account, else a keyed tag."""
        try:
            async with asyncio.timeout(self._store_timeout):
                return await self._accounts.log_name(login)
        except (StoreUnavailable, TimeoutError):
            return unknown_login(login)

    def draining(self) -> bool:
        """Whether the node is draining: it takes no new mail by any door."""
        return self._draining is not None and self._draining()

    async def check_sender(
        self, account: str, address: str, tx: str, ret: str | None = None
    ) -> str | None:
        """A refusal reply for this reverse-path, or None.

        With sender identities on, the address must be a verified identity of the account
        (enforce: 550 5.7.1; warn: logged), and RET=FULL needs one in both modes (a notice
        carrying the whole message to a forged sender is backscatter with a payload). With
        SPF enforced, its domain must authorize our egress IPs. A draining node refuses
        every new transaction (421 4.3.2: the HTTP API answers 503).
        """
        if self.draining():
            return str(replies.NODE_DRAINING)
        if is_null_sender(address):
            self._senders[tx] = ("<>", True)  # never gets notices: nothing to refuse
            return None
        if not is_mailbox(address):
            return str(replies.BAD_SENDER)
        if self._lists is not None and (
            denied := await self._lists.sender_refusal(account, address)
        ):
            return denied
        domain = domain_of(address)
        verified = True  # identities off: every sender is treated as before
        if self._identities is not None:
            try:
                async with asyncio.timeout(self._store_timeout):
                    verified = await self._identities.covers(account, address)
            except (StoreUnavailable, TimeoutError) as exc:
                log.error("identities.unavailable", account=account, error=str(exc) or "timeout")
                return str(replies.STORE_UNAVAILABLE)
            if not verified:
                log.warning(
                    "sender.unverified",
                    account=account,
                    sender=address,
                    where="mail_from",
                    mode=self._identities_mode,
                )
                if self._identities_mode == "enforce":
                    return replies.SENDER_NOT_VERIFIED.format(domain=domain)
                if ret == "FULL":
                    return replies.DSN_NEEDS_VERIFIED_SENDER.format(param="RET=FULL", domain=domain)
        self._senders[tx] = (domain, verified)
        return await self._check_spf(account, address, tx)

    async def _check_spf(self, account: str, address: str, tx: str) -> str | None:
        if self._spf is None or self._spf_mode == "off":
            return None
        verdict = await self._spf.check(address)
        if verdict is None or verdict.authorized or verdict.result == "temperror":
            return None
        log.warning(
            "spf.not_authorized",
            account=account,
            sender=address,
            result=verdict.result,
            ip=verdict.ip,
            mode=self._spf_mode,
        )
        if self._spf_mode == "enforce" and verdict.result in (
            "fail",
            "softfail",
            "neutral",
            "none",
        ):
            return replies.SPF_NOT_AUTHORIZED.format(
                domain=domain_text(address), ip=verdict.ip, result=verdict.result
            )
        self._headers[tx] = (
            f"X-Relay-SPF: {verdict.result} ({address.rpartition('@')[2]} does not authorize"
            f" egress {verdict.ip})\r\n"
        ).encode()
        return None

    def new_transaction(self) -> str:
        return self._quota.new_transaction()

    async def receive(self, account: str) -> Incoming | str:
        """A spool file for the content of the account's next message, named by its queue
        id; the 452 4.3.1 when the disk is nearly full. The body is hashed for DKIM as it
        arrives only when the account owns a key (20 MB: about 70 ms of CPU saved)."""
        spool = self._queue.spool
        hash_body = self._dkim is not None and await self._dkim.signs_for(account)
        try:
            if self._min_free and not spool.has_room(self._min_free):
                log.error("spool.disk_full", dir=str(spool.root), min_free=self._min_free)
                return str(replies.SPOOL_FULL)
            # No file yet: it is created on the thread that makes it durable (`Incoming`).
            return spool.receive(self._queue.new_id(), hash_body=hash_body)
        except (SpoolError, OSError) as exc:
            log.error("spool.unavailable", error=str(exc))
            return str(replies.SPOOL_FULL)

    async def check_recipient(
        self, account: str, address: str, accepted: int, tx: str, dsn: RecipientDsn | None = None
    ) -> str | None:
        """A refusal reply for this recipient, or None once one unit of every limit is
        reserved for it (see `screen_recipient`)."""
        refusal = await self.screen_recipient(account, address, accepted, tx, dsn)
        return None if refusal is None else refusal.reply

    async def screen_recipient(
        self, account: str, address: str, accepted: int, tx: str, dsn: RecipientDsn | None = None
    ) -> Refusal | None:
        """Why this recipient is refused, or None once one unit of every limit is reserved
        for it (one Redis round trip; released if the transaction does not end in an
        accepted message). NOTIFY=SUCCESS needs a verified sender: it gets no notices. An
        address on the account's suppression list is refused before the quota is asked, so
        it costs nothing. SMTP (RCPT) and the HTTP send API both come here."""
        if not is_mailbox(address):
            return Refusal(replies.BAD_RECIPIENT.format(address=address[:100]), "address")
        if self._lists is not None and (
            denied := await self._lists.recipient_refusal(account, address)
        ):
            return Refusal(denied, "unavailable" if denied.startswith("4") else "denied")
        if dsn is not None and dsn.notify and "SUCCESS" in dsn.notify:
            domain, verified = self._senders.get(tx, ("<>", False))
            if not verified:
                reply = replies.DSN_NEEDS_VERIFIED_SENDER.format(
                    param="NOTIFY=SUCCESS", domain=domain
                )
                return Refusal(reply, "dsn")
        if accepted >= self._settings.max_recipients:
            reply = replies.TOO_MANY_RECIPIENTS.format(limit=self._settings.max_recipients)
            return Refusal(reply, "too_many")
        # The suppression list is looked up in the reservation's own step: one round trip.
        blocked = None if self._events is None else SuppressionList.locate(account, address)
        now = self._clock.now()
        try:
            started = time.perf_counter()
            async with asyncio.timeout(self._store_timeout):
                decision = await self._quota.reserve(account, tx, address, now, blocked=blocked)
            metrics.record("quota_latency", time.perf_counter() - started)
        except (QuotaUnavailable, TimeoutError) as exc:
            log.error("quota.unavailable", account=account, error=str(exc) or "timeout")
            return Refusal(str(replies.STORE_UNAVAILABLE), "unavailable")
        if decision.verdict is Verdict.BLOCKED:
            return _suppressed(account, SuppressionList.entry(address, decision.reason))
        refused = policy.refusal(decision, address, now)
        if refused is None:
            return None
        log.info(
            "quota.refused",
            account=account,
            verdict=decision.verdict.name.lower(),
            limit=decision.limit,
            retry_at=decision.retry_at,
        )
        kind: RefusalKind = "limit" if policy.is_limit(decision) else "account"
        return Refusal(refused, kind, decision.retry_at)

    async def release(self, account: str, tx: str) -> None:
        """Give back what an unfinished transaction reserved. Failing, the units stay counted
        until they leave the window: the safe side of a quota."""
        self._headers.pop(tx, None)
        self._senders.pop(tx, None)
        try:
            async with asyncio.timeout(self._store_timeout):
                await self._quota.release(account, tx, self._clock.now())
        except (QuotaUnavailable, TimeoutError) as exc:
            log.warning("quota.release_failed", account=account, error=str(exc) or "timeout")

    async def _check_from_header(self, message: Submitted) -> str | None:
        """Every From: address must be a verified identity of the account, as MAIL FROM
        must: receivers show (and DMARC judges) the From:. None to go on."""
        if self._identities is None:
            return None
        for address in from_addresses(message.body.head):
            try:
                async with asyncio.timeout(self._store_timeout):
                    verified = await self._identities.covers(message.account, address)
            except (StoreUnavailable, TimeoutError) as exc:
                log.error("identities.unavailable", account=message.account, error=str(exc))
                return str(replies.STORE_UNAVAILABLE)
            if verified:
                continue
            log.warning(
                "sender.unverified",
                account=message.account,
                sender=address,
                where="from_header",
                mode=self._identities_mode,
            )
            if self._identities_mode == "enforce":
                domain = domain_text(address)
                log.warning("message.refused", account=message.account, reason="unverified From")
                return replies.FROM_NOT_VERIFIED.format(domain=domain)
        return None

    async def accept(self, tx: str, message: Submitted) -> str:
        """Queue the spooled message and return the 250, or a refusal (its body is then
        removed from the spool). The quota reserved at RCPT is committed with the 250,
        released otherwise."""
        try:
            reply = await self._accept(tx, message)
        except BaseException:
            self._queue.spool.remove(message.body.id)
            await self.release(message.account, tx)
            raise
        if not reply.startswith("250"):
            await self._queue.spool.discard(message.body.id)
        return reply

    async def _accept(self, tx: str, message: Submitted) -> str:
        spooled = message.body
        refusal = await self._check_from_header(message)
        if refusal is not None:
            await self.release(message.account, tx)
            return refusal
        sender_verified = self._senders.pop(tx, ("", False))[1]
        if self._content_check is not None:
            sample = await self._queue.spool.read_prefix(spooled.id, CONTENT_SAMPLE)
            refusal = await self._content_check(message.account, message.mail_from, sample)
            if refusal is not None:
                await self.release(message.account, tx)
                log.warning("message.refused", account=message.account, reply=refusal)
                return refusal
        queue_id = spooled.id
        now = self._clock.now()
        added = self._headers.pop(tx, b"") + missing_headers(
            spooled.head, hostname=self._hostname, queue_id=queue_id, now=now
        )
        stamped_id = message_id_of(added + spooled.head)
        signature = b""
        if self._dkim is not None and spooled.body_hash is not None:
            signature = await self._dkim(added + spooled.head, spooled.body_hash, message.account)
        prefix = (
            received_header(
                helo=message.helo,
                peer_ip=message.peer_ip,
                hostname=self._hostname,
                protocol=message.protocol,
                queue_id=queue_id,
                now=now,
            )
            + signature
            + added
        )
        if self._content_scan is not None:  # malware and spam (relay/content): refuse or hold
            reply = await self._content_scan(message, prefix)
            if reply is not None:
                await self.release(message.account, tx)
                return reply
        envelope = Envelope(
            mail_from=message.mail_from,
            recipients=message.recipients,
            account=message.account,
            dsn=message.dsn,
            sender_verified=sender_verified and bool(message.mail_from),
        )
        # The quota commit and the trace ride with the enqueue: one round trip for all three.
        along = [
            Along(
                "quota.commit_failed",  # the 250 stands: the units stay counted (expiring)
                partial(self._quota.stage_commit, owner=message.account, tx=tx),
                {"account": message.account},
            )
        ]
        if self._trace is not None:
            along.append(
                Along(
                    "trace.failed",
                    partial(
                        self._trace,
                        queue_id=queue_id,
                        account=message.account,
                        message_id=stamped_id,
                    ),
                    {"queue_id": queue_id},
                )
            )
        if self._events is not None:
            along.append(self._events.accepted_along(message.account, queue_id, message.recipients))
        try:
            async with asyncio.timeout(self._store_timeout):
                await self._queue.enqueue_spooled(envelope, spooled, prefix, along)
        except (StoreUnavailable, TimeoutError) as exc:
            log.error("queue.store_failed", account=message.account, error=str(exc))
            await self.release(message.account, tx)
            return str(replies.STORE_UNAVAILABLE)
        log.info(
            "message.queued",
            queue_id=queue_id,
            account=message.account,
            mail_from=message.mail_from,
            recipients=len(message.recipients),
            size=len(prefix) + spooled.size,
        )
        self._on_queued()
        return replies.QUEUED.format(queue_id=queue_id)


def _suppressed(account: str, entry: Suppressed) -> Refusal:
    since = dt.datetime.fromtimestamp(entry.at, dt.UTC).strftime("%Y-%m-%d")
    reply = replies.SUPPRESSED.format(
        address=entry.address[:100], since=since, reason=clean_line(entry.reason)[:200]
    )
    log.info("suppression.refused", account=account, source=entry.source)
    return Refusal(reply, "suppressed")
