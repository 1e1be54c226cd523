"""What the submission server decides, without sockets: auth, recipient checks, acceptance."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from quota import QuotaStore, QuotaUnavailable
from relay import replies
from relay.accounts import Account, AccountStore, unknown_login
from relay.clock import Clock
from relay.config import SubmissionSettings
from relay.errors import StoreUnavailable
from relay.queue import DsnRequest, Envelope, QueueStore
from relay.sender_auth.spf import SpfChecker
from relay.submission import policy
from relay.submission.addresses import is_mailbox
from relay.submission.message import received_header, stamp

__all__ = ["Submission", "SubmissionService", "Submitted"]

log = structlog.get_logger("relay.submission")

ContentCheck = Callable[[str, str, bytes], Awaitable[str | None]]
"""(account, mail_from, body) → a refusal reply, or None to accept."""


@dataclass(frozen=True)
class Submitted:
    """One complete transaction, as the server hands it over after DATA."""

    account: str
    mail_from: str
    recipients: tuple[str, ...]
    body: bytes
    peer_ip: str
    helo: str
    dsn: DsnRequest = field(default_factory=DsnRequest)
    """RET/ENVID and NOTIFY/ORCPT as the client gave them (RFC 3461)."""


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

    async def check_sender(self, account: str, address: str, tx: str) -> str | None: ...

    def new_transaction(self) -> str: ...

    async def check_recipient(
        self, account: str, address: str, accepted: int, tx: str
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
        trace: Callable[[str, str], Awaitable[None]] | None = None,
        spf: SpfChecker | None = None,
        spf_mode: str = "off",
        dkim: Callable[[bytes], Awaitable[bytes]] | None = None,
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
        self._spf = spf
        self._spf_mode = spf_mode
        self._dkim = dkim
        """Returns the message with a DKIM-Signature when its From: domain has a key."""
        self._headers: dict[str, bytes] = {}
        """Transaction → header lines to add at acceptance (the SPF warning)."""
        """Remembers queue id → account, to find the sender of a message complained about."""

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

    async def check_sender(self, account: str, address: str, tx: str) -> str | None:
        """A refusal reply for this reverse-path, or None. Any sender is allowed (contract),
        as long as, with SPF enforced, its domain authorizes our egress IPs."""
        if address in ("", "<>"):
            return None
        if not is_mailbox(address):
            return str(replies.BAD_SENDER)
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
                domain=address.rpartition("@")[2], ip=verdict.ip, result=verdict.result
            )
        self._headers[tx] = (
            f"X-Relay-SPF: {verdict.result} ({address.rpartition('@')[2]} does not authorize"
            f" egress {verdict.ip})\r\n"
        ).encode()
        return None

    def new_transaction(self) -> str:
        return self._quota.new_transaction()

    async def check_recipient(
        self, account: str, address: str, accepted: int, tx: str
    ) -> str | None:
        """A refusal reply for this recipient, or None once one unit of every limit is
        reserved for it (one Redis round trip; released if the transaction does not end in
        an accepted DATA)."""
        if not is_mailbox(address):
            return replies.BAD_RECIPIENT.format(address=address[:100])
        if accepted >= self._settings.max_recipients:
            return replies.TOO_MANY_RECIPIENTS.format(limit=self._settings.max_recipients)
        now = self._clock.now()
        try:
            async with asyncio.timeout(self._store_timeout):
                decision = await self._quota.reserve(account, tx, address, now)
        except (QuotaUnavailable, TimeoutError) as exc:
            log.error("quota.unavailable", account=account, error=str(exc) or "timeout")
            return str(replies.STORE_UNAVAILABLE)
        refusal = policy.refusal(decision, address, now)
        if refusal is not None:
            log.info(
                "quota.refused",
                account=account,
                verdict=decision.verdict.name.lower(),
                limit=decision.limit,
                retry_at=decision.retry_at,
            )
        return refusal

    async def release(self, account: str, tx: str) -> None:
        """Give back what an unfinished transaction reserved. Failing, the units stay counted
        until they leave the window: the safe side of a quota."""
        self._headers.pop(tx, None)
        try:
            async with asyncio.timeout(self._store_timeout):
                await self._quota.release(account, tx, self._clock.now())
        except (QuotaUnavailable, TimeoutError) as exc:
            log.warning("quota.release_failed", account=account, error=str(exc) or "timeout")

    async def accept(self, tx: str, message: Submitted) -> str:
        """Store the message durably and return the 250, or a 4xx if it could not be stored.
        The quota reserved at RCPT is committed with the 250, released with the 4xx."""
        if self._content_check is not None:
            refusal = await self._content_check(message.account, message.mail_from, message.body)
            if refusal is not None:
                await self.release(message.account, tx)
                log.warning("message.refused", account=message.account, reply=refusal)
                return refusal
        queue_id = self._queue.new_id()
        now = self._clock.now()
        body = stamp(
            message.body,
            received=self._headers.pop(tx, b""),
            hostname=self._hostname,
            queue_id=queue_id,
            now=now,
        )
        if self._dkim is not None:
            body = await self._dkim(body)
        body = (
            received_header(
                helo=message.helo,
                peer_ip=message.peer_ip,
                hostname=self._hostname,
                protocol="ESMTPSA",
                queue_id=queue_id,
                now=now,
            )
            + body
        )
        envelope = Envelope(
            mail_from=message.mail_from,
            recipients=message.recipients,
            account=message.account,
            dsn=message.dsn,
        )
        try:
            async with asyncio.timeout(self._store_timeout):
                await self._queue.enqueue(envelope, body, message_id=queue_id)
        except (StoreUnavailable, TimeoutError) as exc:
            log.error("queue.store_failed", account=message.account, error=str(exc))
            await self.release(message.account, tx)
            return str(replies.STORE_UNAVAILABLE)
        try:
            async with asyncio.timeout(self._store_timeout):
                await self._quota.commit(message.account, tx)
        except (QuotaUnavailable, TimeoutError) as exc:
            # The message is stored: the 250 stands. The reservation stays counted (its
            # record expires), which is what committing means.
            log.warning("quota.commit_failed", account=message.account, error=str(exc))
        log.info(
            "message.queued",
            queue_id=queue_id,
            account=message.account,
            mail_from=message.mail_from,
            recipients=len(message.recipients),
            size=len(body),
        )
        if self._trace is not None:
            try:
                await self._trace(queue_id, message.account)
            except (StoreUnavailable, TimeoutError) as exc:
                log.warning("trace.failed", queue_id=queue_id, error=str(exc))
        self._on_queued()
        return replies.QUEUED.format(queue_id=queue_id)
