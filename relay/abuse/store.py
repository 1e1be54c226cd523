"""Suspension records in Redis: per account (hash tag `{LOGIN}`), plus global indexes.

susp:{LOGIN}:ID      hash: the record
susp:{LOGIN}:index   zset: ID -> created
susp:{LOGIN}:outbox  list: follow-ups of changes not finished yet (relay/abuse/changes.py)
suspensions          zset: ID -> created (all accounts)
suspensions:open     set of open IDs
suspensions:owner    hash: ID -> LOGIN
suspensions:pending  set of LOGINs whose outbox may hold follow-ups (replayed at start)

A change is written by one script in the account's slot (relay/abuse/change.lua); the global
indexes are other slots, written after it by its follow-up task.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, replace
from typing import Any

import redis.asyncio as aioredis
from redis.typing import EncodableT, FieldT

from relay.errors import NotFound
from relay.redis_client import store_errors, text, text_dict
from reputation import Kind, Status, Terms

__all__ = ["Suspension", "SuspensionStore"]

_ALL, _OPEN, _OWNER = "suspensions", "suspensions:open", "suspensions:owner"


@dataclass(frozen=True)
class Suspension:
    id: str
    account: str
    kind: Kind
    reason: str
    evidence: dict[str, Any]
    actor: str
    created_at: float
    terms: Terms
    status: Status = Status.OPEN
    closed_at: float | None = None
    closed_by: str = ""
    close_reason: str = ""

    def closed(self, status: Status, *, at: float, by: str, reason: str) -> Suspension:
        return replace(self, status=status, closed_at=at, closed_by=by, close_reason=reason)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "account": self.account,
            "kind": self.kind.value,
            "reason": self.reason,
            "evidence": self.evidence,
            "actor": self.actor,
            "created_at": self.created_at,
            "offence": self.terms.offence,
            "user_may_lift": self.terms.user_may_lift,
            "not_before": self.terms.not_before,
            "may_deny": self.terms.may_deny,
            "status": self.status.value,
            "closed_at": self.closed_at,
            "closed_by": self.closed_by,
            "close_reason": self.close_reason,
        }


def _record_key(login: str, sid: str) -> str:
    return f"susp:{{{login}}}:{sid}"


def _index_key(login: str) -> str:
    return f"susp:{{{login}}}:index"


def _to_fields(s: Suspension) -> dict[FieldT, EncodableT]:
    return {k: json.dumps(v) for k, v in s.as_dict().items()}


def record_fields(s: Suspension) -> dict[str, str]:
    """The record as stored: each value JSON-encoded (its status: `"open"`, quotes included)."""
    return {k: json.dumps(v) for k, v in s.as_dict().items()}


def fingerprint(history: list[Suspension]) -> str:
    """What a change decided on, as change.lua reads it back: `ID=STATUS,…` in index order."""
    return ",".join(f"{s.id}={json.dumps(s.status.value)}" for s in history)


def _from_fields(raw: dict[str, str]) -> Suspension:
    d = {k: json.loads(v) for k, v in raw.items()}
    return Suspension(
        id=d["id"],
        account=d["account"],
        kind=Kind(d["kind"]),
        reason=d["reason"],
        evidence=d["evidence"],
        actor=d["actor"],
        created_at=d["created_at"],
        terms=Terms(
            offence=d["offence"],
            user_may_lift=d["user_may_lift"],
            not_before=d["not_before"],
            may_deny=d["may_deny"],
        ),
        status=Status(d["status"]),
        closed_at=d["closed_at"],
        closed_by=d["closed_by"],
        close_reason=d["close_reason"],
    )


class SuspensionStore:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis

    @staticmethod
    def new_id() -> str:
        return secrets.token_hex(5)

    @staticmethod
    def record_key(login: str, sid: str) -> str:
        return _record_key(login, sid)

    @staticmethod
    def index_key(login: str) -> str:
        return _index_key(login)

    async def index(self, s: Suspension) -> None:
        """The global indexes of a record the account's script wrote (idempotent)."""
        with store_errors():
            await self._redis.hset(_OWNER, s.id, s.account)
            await self._redis.zadd(_ALL, {s.id: s.created_at})
            if s.status is Status.OPEN:
                await self._redis.sadd(_OPEN, s.id)
            else:
                await self._redis.srem(_OPEN, s.id)

    async def of_account_by_id(self, login: str, sid: str) -> Suspension:
        """A record read in the account's slot (no global index needed)."""
        with store_errors():
            raw = await self._redis.hgetall(_record_key(login, sid))
        if not raw:
            raise NotFound(f"no suspension {sid!r}")
        return _from_fields(text_dict(raw))

    async def save(self, s: Suspension) -> None:
        """Write the record, then the indexes (other Cluster slots, read tolerantly)."""
        with store_errors():
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(_record_key(s.account, s.id), mapping=_to_fields(s))
                pipe.zadd(_index_key(s.account), {s.id: s.created_at})
                await pipe.execute()
        await self.index(s)

    async def get(self, sid: str) -> Suspension:
        with store_errors():
            owner = await self._redis.hget(_OWNER, sid)
            raw = await self._redis.hgetall(_record_key(text(owner), sid)) if owner else {}
        if not raw:
            raise NotFound(f"no suspension {sid!r}")
        return _from_fields(text_dict(raw))

    async def of_account(self, login: str) -> list[Suspension]:
        """Every suspension of the account, oldest first."""
        with store_errors():
            ids = [text(i) for i in await self._redis.zrange(_index_key(login), 0, -1)]
            records = [await self._redis.hgetall(_record_key(login, sid)) for sid in ids]
        return [_from_fields(text_dict(raw)) for raw in records if raw]

    async def listing(self, *, open_only: bool, limit: int = 200) -> list[Suspension]:
        with store_errors():
            if open_only:
                ids = [text(i) for i in await self._redis.smembers(_OPEN)]
            else:
                ids = [text(i) for i in await self._redis.zrevrange(_ALL, 0, limit - 1)]
        found = []
        for sid in ids:
            try:
                found.append(await self.get(sid))
            except NotFound:
                continue
        return sorted(found, key=lambda s: s.created_at)
