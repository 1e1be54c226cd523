"""Customers' requests to support to lift a suspension (contract 004), kept for operators.

unblock:ID          hash: the record (JSON values)
unblocks            zset: ID -> created (all)
unblocks:open       zset: ID -> created (awaiting an answer)

A request is only a message to the operators: lifting stays the suspension service's
decision (`SuspensionService.lift`), with its rules. Asking and answering are audited.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, replace
from typing import Any

import redis.asyncio as aioredis

from relay.abuse.audit import AuditLog
from relay.clock import Clock
from relay.errors import InvalidInput, NotFound
from relay.redis_client import store_errors, text, text_dict
from relay.safe_text import clean_line

__all__ = ["UnblockRequest", "UnblockRequests"]

_ALL, _OPEN = "unblocks", "unblocks:open"
MAX_MESSAGE = 2000
MAX_OPEN_PER_ACCOUNT = 3


def _key(rid: str) -> str:
    return f"unblock:{rid}"


@dataclass(frozen=True)
class UnblockRequest:
    id: str
    account: str
    message: str
    suspensions: tuple[str, ...]
    created_at: float
    status: str = "open"
    """open or closed."""
    closed_at: float | None = None
    closed_by: str = ""
    close_reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "account": self.account,
            "message": self.message,
            "suspensions": list(self.suspensions),
            "created_at": self.created_at,
            "status": self.status,
            "closed_at": self.closed_at,
            "closed_by": self.closed_by,
            "close_reason": self.close_reason,
        }


def _from_fields(raw: dict[str, str]) -> UnblockRequest:
    d = {k: json.loads(v) for k, v in raw.items()}
    d["suspensions"] = tuple(d.get("suspensions", ()))
    return UnblockRequest(**d)


class UnblockRequests:
    def __init__(self, redis: aioredis.Redis, audit: AuditLog, clock: Clock) -> None:
        self._redis = redis
        self._audit = audit
        self._clock = clock

    async def ask(self, login: str, message: str, suspensions: list[str]) -> UnblockRequest:
        """Store a customer's request (one line of text, cleaned) and audit it."""
        message = clean_line(" ".join(message.split()))[:MAX_MESSAGE]
        if not message:
            raise InvalidInput("say in a few words why the account should be unblocked")
        mine = [r for r in await self.listing(open_only=True) if r.account == login]
        if len(mine) >= MAX_OPEN_PER_ACCOUNT:
            raise InvalidInput(
                f"{len(mine)} requests are already waiting for support: they will answer"
            )
        request = UnblockRequest(
            id=secrets.token_hex(5),
            account=login,
            message=message,
            suspensions=tuple(suspensions),
            created_at=self._clock.now(),
        )
        await self._save(request, opened=True)
        await self._audit.append(
            actor=f"user:{login}",
            action="unblock-request",
            account=login,
            subject=request.id,
            reason=message,
            evidence={"suspensions": list(suspensions)},
        )
        return request

    async def get(self, rid: str) -> UnblockRequest:
        with store_errors():
            raw = await self._redis.hgetall(_key(rid))
        if not raw:
            raise NotFound(f"no unblock request {rid!r}")
        return _from_fields(text_dict(raw))

    async def close(self, rid: str, *, actor: str, reason: str) -> UnblockRequest:
        request = await self.get(rid)
        if request.status != "open":
            raise InvalidInput(f"unblock request {rid} is already {request.status}")
        closed = replace(
            request,
            status="closed",
            closed_at=self._clock.now(),
            closed_by=actor,
            close_reason=clean_line(reason),
        )
        await self._save(closed, opened=False)
        await self._audit.append(
            actor=actor,
            action="unblock-answer",
            account=request.account,
            subject=rid,
            reason=clean_line(reason),
        )
        return closed

    async def listing(self, *, open_only: bool, limit: int = 200) -> list[UnblockRequest]:
        """Oldest first: the open ones, or the newest `limit` of all."""
        with store_errors():
            key = _OPEN if open_only else _ALL
            ids = [text(i) for i in await self._redis.zrevrange(key, 0, limit - 1)]
        found = []
        for rid in ids:
            try:
                found.append(await self.get(rid))
            except NotFound:
                continue
        return sorted(found, key=lambda r: r.created_at)

    async def _save(self, request: UnblockRequest, *, opened: bool) -> None:
        fields = {k: json.dumps(v) for k, v in request.as_dict().items()}
        with store_errors():
            await self._redis.hset(_key(request.id), mapping=fields)  # type: ignore[arg-type]
            await self._redis.zadd(_ALL, {request.id: request.created_at})
            if opened:
                await self._redis.zadd(_OPEN, {request.id: request.created_at})
            else:
                await self._redis.zrem(_OPEN, request.id)
