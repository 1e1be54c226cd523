"""DKIM keys of customer domains in Redis, and the signer used when a message is accepted.

The key is chosen by the From: domain: its own key, else the key of its registrable domain
(DMARC relaxed alignment). Keys are cached in the process for a minute, so signing costs no
Redis round trip per message.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import redis.asyncio as aioredis

from relay.abuse.content import from_addresses
from relay.errors import NotFound
from relay.redis_client import store_errors, text
from reputation import registrable_domain
from reputation.dkim import DkimKey, sign

__all__ = ["DkimKeyStore", "DkimSigner"]

_KEYS = "dkim:keys"


class DkimKeyStore:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis

    async def put(self, key: DkimKey) -> None:
        value = json.dumps(
            {
                "selector": key.selector,
                "algorithm": key.algorithm,
                "private_pem": key.private_pem.decode(),
                "created_at": time.time(),
            }
        )
        with store_errors():
            await self._redis.hset(_KEYS, key.domain, value)

    async def get(self, domain: str) -> DkimKey | None:
        with store_errors():
            raw = await self._redis.hget(_KEYS, domain.lower())
        if raw is None:
            return None
        data = json.loads(text(raw))
        return DkimKey(
            domain.lower(), data["selector"], data["algorithm"], data["private_pem"].encode()
        )

    async def domains(self) -> list[DkimKey]:
        with store_errors():
            names = sorted(text(d) for d in await self._redis.hkeys(_KEYS))
        keys = [await self.get(name) for name in names]
        return [k for k in keys if k is not None]

    async def remove(self, domain: str) -> None:
        with store_errors():
            removed = await self._redis.hdel(_KEYS, domain.lower())
        if not removed:
            raise NotFound(f"no DKIM key for {domain!r}")


class DkimSigner:
    def __init__(
        self, store: DkimKeyStore, *, clock: Callable[[], float] = time.time, ttl: float = 60.0
    ) -> None:
        self._store = store
        self._clock = clock
        self._ttl = ttl
        self._cache: dict[str, tuple[float, DkimKey | None]] = {}

    async def _key(self, domain: str) -> DkimKey | None:
        now = self._clock()
        hit = self._cache.get(domain)
        if hit is not None and hit[0] > now:
            return hit[1]
        key = await self._store.get(domain)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[domain] = (now + self._ttl, key)
        return key

    async def __call__(self, headers: bytes, body_hash: str) -> bytes:
        """The DKIM-Signature field for a message with this header section and body hash
        (the body itself stays in the spool), or b"" when its From: domain has no key."""
        for address_domain in _from_domains(headers):
            for domain in dict.fromkeys([address_domain, registrable_domain(address_domain)]):
                if domain and (key := await self._key(domain)) is not None:
                    return sign(headers, key, now=int(self._clock()), body_hash=body_hash)
        return b""


def _from_domains(message: bytes) -> list[str]:
    return [address.rpartition("@")[2].lower().rstrip(".") for address in from_addresses(message)]
