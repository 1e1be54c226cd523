"""What the submission server decides, without sockets: auth, recipient checks, acceptance."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import structlog

from relay import replies
from relay.accounts import Account, AccountStore
from relay.clock import Clock
from relay.config import SubmissionSettings
from relay.errors import StoreUnavailable
from relay.queue import Envelope, QueueStore
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

    def check_recipient(self, account: str, address: str, accepted: int) -> str | None: ...

    async def accept(self, message: Submitted) -> str: ...


class SubmissionService:
    def __init__(
        self,
        *,
        accounts: AccountStore,
        queue: QueueStore,
        settings: SubmissionSettings,
        hostname: str,
        clock: Clock,
        store_timeout: float,
        on_queued: Callable[[], None] = lambda: None,
    ) -> None:
        self._accounts = accounts
        self._queue = queue
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

    def check_recipient(self, account: str, address: str, accepted: int) -> str | None:
        """A refusal reply for this recipient, or None to accept it."""
        if not is_mailbox(address):
            return replies.BAD_RECIPIENT.format(address=address[:100])
        if accepted >= self._settings.max_recipients:
            return replies.TOO_MANY_RECIPIENTS.format(limit=self._settings.max_recipients)
        return None

    async def accept(self, message: Submitted) -> str:
        """Store the message durably and return the 250, or a 4xx if it could not be stored."""
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
            return str(replies.STORE_UNAVAILABLE)
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
