"""A suspension change written whole, and its follow-ups in other slots, never half done.

Opening, lifting or denying a suspension changes the record, the quota state that refuses
the account's RCPTs and the account's audit stream: one script in the account's slot does
all of it (change.lua), after checking that the account's suspensions are still what the
caller decided on. What lives in other slots (the global indexes, the queue's hold or
release, the global audit copy, the notices) is a follow-up task pushed by the same script
onto the account's outbox: the caller runs it at once, and `SuspensionService.replay` runs
whatever a crash left there when the relay starts. Each step of a task may run twice (a crash
after it, before the task is dropped): the indexes and the hold are idempotent, the global
audit copy is made once (audit_copy.lua), and a notice may be sent twice, never lost.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from dataclasses import asdict, dataclass
from typing import Literal

import redis.asyncio as aioredis

from quota import QuotaStore
from relay.abuse.audit import of_account
from relay.abuse.store import Suspension, SuspensionStore, fingerprint, record_fields
from relay.redis_client import load_script, store_errors, text

__all__ = ["AccountChanges", "FollowUp", "QuotaChange"]

_PENDING = "suspensions:pending"
_LOCK_MS = 60_000

QuotaChange = Literal["suspend", "deny", "lift", ""]


def _dead_here(holder: str, node: str) -> bool:
    """The lock's holder is a process of this node that no longer runs."""
    host, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    if host != node or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _outbox(login: str) -> str:
    return f"susp:{{{login}}}:outbox"


def _lock(login: str) -> str:
    return f"susp:{{{login}}}:draining"


@dataclass(frozen=True)
class FollowUp:
    """What a change leaves to do in other slots, in this order."""

    account: str
    suspension: str
    queue: Literal["hold", "release", ""]
    notify: Literal["suspended", "lifted", "denied"]
    at: float
    audit: dict[str, str]
    """The account's audit entry, copied into the global stream."""
    audit_id: str = ""
    """Its id in the account's stream (set by the script)."""

    def encode(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if k != "audit_id"})

    @classmethod
    def decode(cls, raw: str) -> FollowUp:
        audit_id, _, body = raw.partition(" ")
        return cls(**json.loads(body), audit_id=audit_id)


class AccountChanges:
    def __init__(self, redis: aioredis.Redis, quota: QuotaStore, node: str | None = None) -> None:
        self._redis = redis
        self._node = node or socket.gethostname()
        """Names this node's processes in lock tokens (`node.id`; the host name if not given)."""
        self._quota = quota
        self._change = load_script(redis, __file__, "change.lua")

    async def write(
        self,
        history: list[Suspension],
        record: Suspension,
        *,
        quota: QuotaChange,
        quota_reason: str,
        follow_up: FollowUp,
    ) -> bool:
        """Write the change if the account's suspensions are still `history`; False (nothing
        written) when another change came first: read again and decide again."""
        login = record.account
        with store_errors():
            # Marked before the script: a crash right after it still leaves the mark to replay.
            await self._redis.sadd(_PENDING, login)
            result = await self._change(
                keys=[
                    SuspensionStore.index_key(login),
                    SuspensionStore.record_key(login, record.id),
                    self._quota.state_key(login),
                    of_account(login),
                    _outbox(login),
                ],
                args=[
                    fingerprint(history),
                    SuspensionStore.record_key(login, ""),
                    record.id,
                    repr(record.created_at),
                    json.dumps(record_fields(record)),
                    quota,
                    quota_reason,
                    json.dumps(follow_up.audit),
                    follow_up.encode(),
                ],
            )
        return text(result) != "changed"

    async def pending(self) -> list[str]:
        """Accounts whose outbox may hold follow-ups."""
        with store_errors():
            return sorted(text(m) for m in await self._redis.smembers(_PENDING))

    async def take(self, login: str) -> str | None:
        """The right to run the account's follow-ups (one runner at a time): a token to give
        back with `release`, or None when another runner has it. A runner of this node that
        died (kill -9) does not make the next one wait for its lock to expire."""
        token = f"{self._node}:{os.getpid()}:{secrets.token_hex(6)}"
        with store_errors():
            if await self._redis.set(_lock(login), token, nx=True, px=_LOCK_MS):
                return token
            holder = text(await self._redis.get(_lock(login)) or b"")
            if _dead_here(holder, self._node):
                await self._redis.delete(_lock(login))
                if await self._redis.set(_lock(login), token, nx=True, px=_LOCK_MS):
                    return token
        return None

    async def release(self, login: str, token: str) -> None:
        with store_errors():
            if text(await self._redis.get(_lock(login)) or b"") == token:
                await self._redis.delete(_lock(login))
            if not await self._redis.llen(_outbox(login)):
                await self._redis.srem(_PENDING, login)

    async def next(self, login: str) -> tuple[str, FollowUp] | None:
        with store_errors():
            raw = await self._redis.lindex(_outbox(login), 0)
        return None if raw is None else (text(raw), FollowUp.decode(text(raw)))

    async def done(self, login: str, raw: str) -> None:
        with store_errors():
            await self._redis.lrem(_outbox(login), 1, raw)
