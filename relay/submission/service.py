"""What the submission server decides, without sockets: auth, recipient checks, acceptance."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import structlog

from quota import QuotaStore, QuotaUnavailable
from relay import replies
from relay.accounts import Account, AccountStore
from relay.clock import Clock
from relay.config import SubmissionSettings
from relay.errors import StoreUnavailable
from relay.queue import Envelope, QueueStore
from relay.submission import policy
from relay.submission.addresses import is_mailbox
from relay.submission.message import received_header, stamp

__all__ = ["Submission", "SubmissionService", "Submitted"]

log = structlog.get_logger("relay.submission")


@dataclass(frozen=True)
class Submitted:
    """One complete transaction, as the server hands it over after DATA."""

    account: str
    mail_from: str
    recipients: tuple[str, ...]
    body: bytes
    peer_ip: str
    helo: str


class Submission(Protocol):
    """What the SMTP handler needs; tests can drive the server with a fake."""

    async def authenticate(self, login: str, password: str) -> Account | None: ...

    def check_sender(self, account: str, address: str) -> str | None: ...

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
    ) -> None:
        self._accounts = accounts
        self._queue = queue
        self._quota = quota
        self._settings = settings
        self._hostname = hostname
        self._clock = clock
        self._store_timeout = store_timeout
        self._on_queued = on_queued

    async def authenticate(self, login: str, password: str) -> Account | None:
        async with asyncio.timeout(self._store_timeout + 5.0):  # + time to hash
            return await self._accounts.authenticate(login, password)

    def check_sender(self, account: str, address: str) -> str | None:
        """A refusal reply for this reverse-path, or None. Any sender is allowed (contract)."""
        if address in ("", "<>") or is_mailbox(address):
            return None
        return str(replies.BAD_SENDER)

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
        try:
            async with asyncio.timeout(self._store_timeout):
                await self._quota.release(account, tx, self._clock.now())
        except (QuotaUnavailable, TimeoutError) as exc:
            log.warning("quota.release_failed", account=account, error=str(exc) or "timeout")

    async def accept(self, tx: str, message: Submitted) -> str:
        """Store the message durably and return the 250, or a 4xx if it could not be stored.
        The quota reserved at RCPT is committed with the 250, released with the 4xx."""
        queue_id = self._queue.new_id()
        now = self._clock.now()
        body = stamp(
            message.body,
            received=received_header(
                helo=message.helo,
                peer_ip=message.peer_ip,
                hostname=self._hostname,
                protocol="ESMTPSA",
                queue_id=queue_id,
                now=now,
            ),
            hostname=self._hostname,
            queue_id=queue_id,
            now=now,
        )
        envelope = Envelope(
            mail_from=message.mail_from, recipients=message.recipients, account=message.account
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
        self._on_queued()
        return replies.QUEUED.format(queue_id=queue_id)
