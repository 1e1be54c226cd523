"""Each account's suppression list: recipients it may not send to any more.

Hard bounces (5.1.x) and complaints add a recipient on their own; the customer or an operator
adds and removes by hand (`relay suppression`, the API). Mail to a listed address is refused
at RCPT (`550 5.1.1`) before the quota is asked, so it costs the account nothing. One hash
per account, keyed by the address lower-cased (the hash tag of the account's keys).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import redis.asyncio as aioredis

from relay.clock import Clock
from relay.redis_client import store_errors, text

__all__ = ["Suppressed", "SuppressionList"]


def _key(account: str) -> str:
    return f"sup:{{{account}}}"


@dataclass(frozen=True)
class Suppressed:
    address: str
    at: float
    reason: str
    source: str
    """"bounce", "complaint", or who added it by hand ("api", "operator:NAME")."""
    message_id: str = ""
    """The message whose bounce or complaint added it, when one did."""

    def as_dict(self) -> dict[str, object]:
        return {
            "address": self.address,
            "at": self.at,
            "reason": self.reason,
            "source": self.source,
            "message_id": self.message_id,
        }


def normal(address: str) -> str:
    return address.strip().lower()


def _parse(address: str, raw: object) -> Suppressed:
    data = json.loads(text(raw))
    return Suppressed(
        address=address,
        at=float(data["at"]),
        reason=str(data["reason"]),
        source=str(data["source"]),
        message_id=str(data.get("message_id", "")),
    )


class SuppressionList:
    def __init__(self, redis: aioredis.Redis, clock: Clock) -> None:
        self._redis = redis
        self._clock = clock

    async def add(
        self, account: str, address: str, *, reason: str, source: str, message_id: str = ""
    ) -> tuple[Suppressed, bool]:
        """(the entry, whether it is new); an address already listed keeps its first entry."""
        entry = Suppressed(normal(address), self._clock.now(), reason[:300], source, message_id)
        value = json.dumps(
            {"at": entry.at, "reason": entry.reason, "source": source, "message_id": message_id}
        )
        with store_errors():
            added = await self._redis.hsetnx(_key(account), entry.address, value)
        if added:
            return entry, True
        found = await self.get(account, address)
        return (found or entry), False

    async def remove(self, account: str, address: str) -> bool:
        with store_errors():
            return bool(await self._redis.hdel(_key(account), normal(address)))

    @staticmethod
    def locate(account: str, address: str) -> tuple[str, str]:
        """(hash key, field) of an address's entry: the quota's reservation looks it up in
        the same step (`QuotaStore.reserve(blocked=...)`; the key has the account's tag)."""
        return _key(account), normal(address)

    @staticmethod
    def entry(address: str, raw: object) -> Suppressed:
        """An entry as stored, read (what `locate` found)."""
        return _parse(normal(address), raw)

    async def get(self, account: str, address: str) -> Suppressed | None:
        """The entry of an address, or None. Raises StoreUnavailable."""
        with store_errors():
            found = await self._redis.hget(_key(account), normal(address))
        return None if found is None else _parse(normal(address), found)

    async def list(self, account: str) -> list[Suppressed]:
        with store_errors():
            found = await self._redis.hgetall(_key(account))
        entries = [_parse(text(k), v) for k, v in found.items()]
        return sorted(entries, key=lambda e: (e.at, e.address))
