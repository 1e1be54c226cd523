"""The HTTP send API's submission: the same service, checks and queue as SMTP.

A request goes through `SubmissionService` step by step as an SMTP transaction does (MAIL:
`check_sender`; RCPT: `screen_recipient` per recipient, so suspension, the suppression list,
the quota, the rates and the recipient cap are the very same code; DATA: the spool, then
`accept`, which checks From:, scans, DKIM-signs, queues and commits the quota). Only the
mapping of refusals to HTTP differs, and it is pure (`answer_for`), so the wording a
customer reads is the SMTP reply itself.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
import structlog

from relay.clock import Clock
from relay.redis_client import store_errors, text
from relay.spool import SpoolError
from relay.submission.compose import ComposedMessage
from relay.submission.service import Refusal, SubmissionService, Submitted

__all__ = ["Answer", "ApiSubmitter", "Idempotency", "answer_for"]

log = structlog.get_logger("relay.api")


@dataclass(frozen=True)
class Answer:
    """An HTTP answer: status, JSON body, extra headers. Errors have FastAPI's shape:
    `{"detail": {"code", "message", "field"?}}`, the message being the SMTP reply."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"status": self.status, "body": self.body, "headers": self.headers})

    @classmethod
    def from_json(cls, stored: str) -> Answer:
        data = json.loads(stored)
        return cls(int(data["status"]), dict(data["body"]), dict(data["headers"]))


def error(status: int, code: str, message: str, field: str = "", **extra: Any) -> Answer:
    body: dict[str, Any] = {"code": code, "message": message}
    if field:
        body["field"] = field
    return Answer(status, {"detail": body | extra})


def answer_for(refusal: Refusal, field: str, now: float) -> Answer:
    """A refused recipient as the request's answer (pure): a limit that frees up is 429
    with Retry-After, the account's state 403, the address 422, Redis trouble 503."""
    reply = refusal.reply
    if refusal.kind == "limit":
        wait = max(1, math.ceil((refusal.retry_at or now + 60) - now))
        answer = error(429, "rate_limited", reply, field)
        return Answer(answer.status, answer.body, {"Retry-After": str(wait)})
    if refusal.kind == "account":
        return error(403, "account_suspended", reply)
    if refusal.kind == "unavailable":
        return Answer(503, error(503, "unavailable", reply).body, {"Retry-After": "5"})
    return error(422, "recipient_refused", reply, field)


def _sender_answer(reply: str) -> Answer:
    if reply.startswith("4"):
        return Answer(503, error(503, "unavailable", reply).body, {"Retry-After": "5"})
    return error(422, "sender_refused", reply, "from")


def _accept_answer(reply: str) -> Answer:
    if reply.startswith("4"):
        return Answer(503, error(503, "unavailable", reply).body, {"Retry-After": "5"})
    field = "from" if "From: header" in reply else "message"
    return error(422, "message_refused", reply, field)


class ApiSubmitter:
    def __init__(self, service: SubmissionService, *, max_message_size: int, clock: Clock) -> None:
        self._service = service
        self._max_size = max_message_size
        self._clock = clock

    async def send(self, account: str, message: ComposedMessage, peer_ip: str) -> Answer:
        """Queue the message as the account, or say why not; never raises for a refusal."""
        service = self._service
        tx = service.new_transaction()
        refused = await service.check_sender(account, message.mail_from, tx)
        if refused is not None:
            await service.release(account, tx)
            return _sender_answer(refused)
        accepted: list[str] = []
        suppressed: list[dict[str, str]] = []
        for n, (field_name, rcpt) in enumerate(message.recipients):
            refusal = await service.screen_recipient(account, rcpt, len(accepted), tx)
            if refusal is None:
                accepted.append(rcpt)
            elif refusal.kind == "suppressed":
                suppressed.append({"address": rcpt, "reply": refusal.reply})
            else:
                await service.release(account, tx)
                return answer_for(refusal, f"{field_name}[{n}]", self._clock.now())
        if not accepted:
            await service.release(account, tx)
            reply = suppressed[0]["reply"]
            return error(422, "all_suppressed", reply, "to", suppressed=suppressed)
        if len(message.content) > self._max_size:
            await service.release(account, tx)
            reply = f"552 5.3.4 Message size exceeds fixed maximum message size ({self._max_size})"
            return error(413, "too_large", reply, "message")
        return await self._queue(account, message, tx, peer_ip, accepted, suppressed)

    async def _queue(
        self,
        account: str,
        message: ComposedMessage,
        tx: str,
        peer_ip: str,
        accepted: list[str],
        suppressed: list[dict[str, str]],
    ) -> Answer:
        service = self._service
        incoming = await service.receive(account)
        if isinstance(incoming, str):
            await service.release(account, tx)
            return Answer(503, error(503, "unavailable", incoming).body, {"Retry-After": "5"})
        try:
            incoming.write(message.content)
            if incoming.head_overflow:
                await service.release(account, tx)
                incoming.abort()
                return error(413, "too_large", "552 5.3.4 Header section too large", "headers")
            spooled = await incoming.commit()
        except SpoolError as exc:
            incoming.abort()
            await service.release(account, tx)
            log.error("spool.write_failed", error=str(exc))
            return Answer(503, error(503, "unavailable", str(exc)).body, {"Retry-After": "5"})
        except BaseException:
            incoming.abort()
            await service.release(account, tx)
            raise
        reply = await service.accept(
            tx,
            Submitted(
                account=account,
                mail_from=message.mail_from,
                recipients=tuple(accepted),
                body=spooled,
                peer_ip=peer_ip,
                helo="api",
                protocol="HTTPSA",
            ),
        )
        if not reply.startswith("250"):
            return _accept_answer(reply)
        queue_id = reply.rsplit(" ", 1)[1]
        return Answer(202, {"id": queue_id, "accepted": accepted, "suppressed": suppressed})


PENDING_FOR = 120
"""Seconds a claimed key stays `pending`: a process that dies mid-request frees it by then."""


class Idempotency:
    """`Idempotency-Key` → the first answer, for `events.idempotency_for` (24 h).

    The key is claimed (SET NX) before sending, so two identical requests at once queue one
    message: the second gets 409 while the first runs, then the first's answer. Answers that
    a retry should not repeat (429, 503) are forgotten so the retry really tries again. A key
    reused with another request body is refused (422), as it is likely a client bug."""

    def __init__(self, redis: aioredis.Redis, *, ttl: float) -> None:
        self._redis = redis
        self._ttl = max(1, int(ttl))
        self._pending = min(self._ttl, PENDING_FOR)

    @staticmethod
    def _key(account: str, key: str) -> str:
        return f"idem:{{{account}}}:{hashlib.sha256(key.encode()).hexdigest()}"

    async def claim(self, account: str, key: str, fingerprint: str) -> Answer | None:
        """None: go ahead (then `settle`); else the answer to give instead."""
        name = self._key(account, key)
        with store_errors():
            if await self._redis.set(name, f"pending {fingerprint}", nx=True, ex=self._pending):
                return None
            found = await self._redis.get(name)
        stored = text(found) if found is not None else f"pending {fingerprint}"
        if stored.startswith("pending "):
            if stored != f"pending {fingerprint}":
                return error(422, "idempotency_key_reused", "key used for another request", "")
            return error(409, "in_progress", "a request with this Idempotency-Key is running")
        saved_fingerprint, _, answer = stored.partition(" ")
        if saved_fingerprint != fingerprint:
            return error(422, "idempotency_key_reused", "Idempotency-Key used for another request")
        return Answer.from_json(answer)

    async def forget(self, account: str, key: str) -> None:
        """The request died before an answer: the key may be used again."""
        with store_errors():
            await self._redis.delete(self._key(account, key))

    async def settle(self, account: str, key: str, fingerprint: str, answer: Answer) -> None:
        name = self._key(account, key)
        with store_errors():
            if answer.status in (429, 503):
                await self._redis.delete(name)
            else:
                await self._redis.set(name, f"{fingerprint} {answer.to_json()}", ex=self._ttl)
