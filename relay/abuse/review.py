"""Complaints no rule could pin on an account, waiting for an operator in Redis.

complaint:ID          hash: the record (JSON values)
complaints            zset: ID -> created (all)
complaints:open       zset: ID -> created (awaiting review)

A review is closed once: `HSETNX complaint:ID claimed` decides which of two operators
acting at the same time does it.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, replace
from typing import Any

import redis.asyncio as aioredis
from redis.typing import EncodableT, FieldT

from relay.errors import InvalidInput, NotFound
from relay.redis_client import store_errors, text, text_dict

__all__ = ["Review", "ReviewStore"]

_ALL, _OPEN = "complaints", "complaints:open"
_FIELDS = (
    "id",
    "created_at",
    "actor",
    "problem",
    "traced_to",
    "evidence",
    "status",
    "account",
    "suspension",
    "closed_at",
    "closed_by",
    "close_reason",
)


def _key(rid: str) -> str:
    return f"complaint:{rid}"


@dataclass(frozen=True)
class Review:
    id: str
    created_at: float
    actor: str
    """Who recorded the complaint."""
    problem: str
    """Why it was not attributed."""
    traced_to: str
    """The account its queue id is traced to, if any: a hint, not a verdict."""
    evidence: dict[str, Any]
    status: str = "open"
    """open, assigned (to `account`, suspended as `suspension`) or dismissed."""
    account: str = ""
    suspension: str = ""
    closed_at: float | None = None
    closed_by: str = ""
    close_reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _FIELDS}


class ReviewStore:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis

    @staticmethod
    def new_id() -> str:
        return secrets.token_hex(5)

    async def add(self, review: Review) -> None:
        fields: dict[FieldT, EncodableT] = {k: json.dumps(v) for k, v in review.as_dict().items()}
        with store_errors():
            await self._redis.hset(_key(review.id), mapping=fields)
            await self._redis.zadd(_ALL, {review.id: review.created_at})
            await self._redis.zadd(_OPEN, {review.id: review.created_at})

    async def get(self, rid: str) -> Review:
        with store_errors():
            raw = await self._redis.hgetall(_key(rid))
        if not raw:
            raise NotFound(f"no complaint {rid!r} under review")
        data = {k: json.loads(v) for k, v in text_dict(raw).items() if k in _FIELDS}
        return Review(**data)

    async def claim(self, rid: str, actor: str) -> Review:
        """Take an open review for closing; InvalidInput when it is closed or being closed."""
        review = await self.get(rid)
        with store_errors():
            won = await self._redis.hsetnx(_key(rid), "claimed", actor)
        if review.status != "open":
            raise InvalidInput(f"complaint {rid} is already {review.status}")
        if not won:
            raise InvalidInput(f"complaint {rid} is being closed by another operator")
        return review

    async def unclaim(self, rid: str) -> None:
        """Give a claimed review back (closing it failed half-way)."""
        with store_errors():
            await self._redis.hdel(_key(rid), "claimed")

    async def close(
        self,
        review: Review,
        *,
        status: str,
        at: float,
        by: str,
        reason: str,
        account: str = "",
        suspension: str = "",
    ) -> Review:
        closed = replace(
            review,
            status=status,
            account=account,
            suspension=suspension,
            closed_at=at,
            closed_by=by,
            close_reason=reason,
        )
        fields: dict[FieldT, EncodableT] = {k: json.dumps(v) for k, v in closed.as_dict().items()}
        with store_errors():
            await self._redis.hset(_key(review.id), mapping=fields)
            await self._redis.zrem(_OPEN, review.id)
        return closed

    async def listing(self, *, open_only: bool, limit: int = 200) -> list[Review]:
        """Oldest first: the open ones, or the newest `limit` of all."""
        with store_errors():
            if open_only:
                ids = [text(i) for i in await self._redis.zrange(_OPEN, 0, limit - 1)]
            else:
                ids = [text(i) for i in await self._redis.zrevrange(_ALL, 0, limit - 1)]
        found = []
        for rid in ids:
            try:
                found.append(await self.get(rid))
            except NotFound:
                continue
        return sorted(found, key=lambda r: r.created_at)
