"""The durable queue in Redis.

Keys share the hash tag `{q}`, so every script touches one Cluster slot:
  {q}:msg:ID     hash: envelope, account, body, jobs_left
  {q}:job:JID    hash: message, domain, pending recipients, attempts, lease token
  {q}:due        zset: job id -> due time (a claimed job's score is its lease end)
  {q}:messages   zset: message id -> creation time (listing)
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from relay.clock import Clock
from relay.errors import NotFound, StoreUnavailable
from relay.queue.model import Envelope, Job, QueuedMessage, split_by_domain
from relay.redis_client import load_script, text, text_dict

__all__ = ["QueueStore", "StoredMessage"]

_DUE = "{q}:due"
_MESSAGES = "{q}:messages"
_JOB_PREFIX = "{q}:job:"


def _msg_key(message_id: str) -> str:
    return f"{{q}}:msg:{message_id}"


def _job_key(job_id: str) -> str:
    return _JOB_PREFIX + job_id


@dataclass(frozen=True)
class StoredMessage:
    meta: QueuedMessage
    body: bytes


class QueueStore:
    def __init__(self, redis: aioredis.Redis, clock: Clock) -> None:
        self._redis = redis
        self._clock = clock
        self._claim = load_script(redis, __file__, "claim.lua")
        self._finish = load_script(redis, __file__, "finish.lua")

    def new_id(self) -> str:
        """Time-ordered and unique: 11 hex digits of milliseconds, 8 random."""
        return f"{int(self._clock.now() * 1000):011x}{secrets.token_hex(4)}"

    async def enqueue(self, envelope: Envelope, body: bytes, message_id: str | None = None) -> str:
        """Store the message and one job per domain in one MULTI; durable when it returns."""
        message_id = message_id or self.new_id()
        now = self._clock.now()
        groups = split_by_domain(envelope.recipients)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(
                    _msg_key(message_id),
                    mapping={
                        "mail_from": envelope.mail_from,
                        "recipients": json.dumps(list(envelope.recipients)),
                        "account": envelope.account,
                        "created_at": repr(now),
                        "size": len(body),
                        "jobs_left": len(groups),
                        "body": body,
                    },
                )
                for n, (domain, rcpts) in enumerate(groups.items()):
                    job_id = f"{message_id}.{n}"
                    pipe.hset(
                        _job_key(job_id),
                        mapping={
                            "message_id": message_id,
                            "domain": domain,
                            "recipients": json.dumps(list(rcpts)),
                            "attempts": 0,
                            "created_at": repr(now),
                            "due_at": repr(now),
                        },
                    )
                    pipe.zadd(_DUE, {job_id: now})
                pipe.zadd(_MESSAGES, {message_id: now})
                await pipe.execute()
        except RedisError as exc:
            raise StoreUnavailable(f"redis: {exc}") from None
        return message_id

    async def claim(self, limit: int, lease: float) -> list[Job]:
        now = self._clock.now()
        token = secrets.token_hex(8)
        try:
            raw = await self._claim(
                keys=[_DUE], args=[repr(now), repr(now + lease), limit, token, _JOB_PREFIX]
            )
        except RedisError as exc:
            raise StoreUnavailable(f"redis: {exc}") from None
        jobs = []
        for i in range(0, len(raw), 2):
            fields = _decode_pairs(raw[i + 1])
            jobs.append(_job(raw[i].decode(), fields, due_at=now + lease))
        return jobs

    async def complete(self, job: Job) -> bool:
        """The job is over (delivered or failed for good). False if the lease was lost."""
        return await self._end(job, "done", 0.0, (), "")

    async def reschedule(
        self, job: Job, pending: tuple[str, ...], due_at: float, error: str
    ) -> bool:
        return await self._end(job, "retry", due_at, pending, error)

    async def _end(
        self, job: Job, action: str, due_at: float, pending: tuple[str, ...], error: str
    ) -> bool:
        try:
            result = await self._finish(
                keys=[_DUE, _job_key(job.id), _msg_key(job.message_id), _MESSAGES],
                args=[
                    job.token,
                    action,
                    job.id,
                    job.message_id,
                    repr(due_at),
                    json.dumps(list(pending)),
                    error[:1000],
                ],
            )
        except RedisError as exc:
            raise StoreUnavailable(f"redis: {exc}") from None
        return bool(result)

    async def load(self, message_id: str) -> StoredMessage:
        try:
            raw = await self._redis.hgetall(_msg_key(message_id))
        except RedisError as exc:
            raise StoreUnavailable(f"redis: {exc}") from None
        if not raw:
            raise NotFound(f"no message {message_id!r} in the queue")
        body = raw.pop(b"body", b"")
        assert isinstance(body, bytes)
        return StoredMessage(meta=_message(message_id, text_dict(raw)), body=body)

    async def next_due(self) -> float | None:
        """When the earliest job (claimed or not) comes due; None when the queue is empty."""
        try:
            first = await self._redis.zrange(_DUE, 0, 0, withscores=True)
        except RedisError as exc:
            raise StoreUnavailable(f"redis: {exc}") from None
        return float(first[0][1]) if first else None

    async def list_messages(self, limit: int = 100) -> list[QueuedMessage]:
        try:
            ids = [text(i) for i in await self._redis.zrange(_MESSAGES, 0, limit - 1)]
            async with self._redis.pipeline(transaction=False) as pipe:
                for mid in ids:
                    pipe.hmget(
                        _msg_key(mid),
                        ["mail_from", "recipients", "account", "created_at", "size", "jobs_left"],
                    )
                rows = await pipe.execute()
        except RedisError as exc:
            raise StoreUnavailable(f"redis: {exc}") from None
        names = ["mail_from", "recipients", "account", "created_at", "size", "jobs_left"]
        return [
            _message(mid, {k: text(v) for k, v in zip(names, row, strict=True)})
            for mid, row in zip(ids, rows, strict=True)
            if row[0] is not None
        ]

    async def jobs_of(self, message_id: str) -> list[Job]:
        meta = (await self.load(message_id)).meta
        jobs = []
        try:
            for n in range(len(split_by_domain(meta.recipients))):
                job_id = f"{message_id}.{n}"
                fields = text_dict(await self._redis.hgetall(_job_key(job_id)))
                if fields:
                    due = await self._redis.zscore(_DUE, job_id)
                    jobs.append(_job(job_id, fields, due_at=float(due or 0)))
        except RedisError as exc:
            raise StoreUnavailable(f"redis: {exc}") from None
        return jobs

    async def count(self) -> int:
        try:
            return int(await self._redis.zcard(_MESSAGES))
        except RedisError as exc:
            raise StoreUnavailable(f"redis: {exc}") from None


def _decode_pairs(flat: list[bytes]) -> dict[str, str]:
    return {flat[i].decode(): flat[i + 1].decode() for i in range(0, len(flat), 2)}


def _job(job_id: str, fields: dict[str, str], due_at: float) -> Job:
    return Job(
        id=job_id,
        message_id=fields["message_id"],
        domain=fields["domain"],
        recipients=tuple(json.loads(fields["recipients"])),
        attempts=int(fields.get("attempts", 0)),
        created_at=float(fields["created_at"]),
        due_at=due_at,
        last_error=fields.get("last_error", ""),
        token=fields.get("token", ""),
    )


def _message(message_id: str, fields: dict[str, str]) -> QueuedMessage:
    return QueuedMessage(
        id=message_id,
        mail_from=fields["mail_from"],
        recipients=tuple(json.loads(fields["recipients"])),
        account=fields["account"],
        created_at=float(fields["created_at"]),
        size=int(fields["size"]),
        jobs_left=int(fields["jobs_left"]),
    )
