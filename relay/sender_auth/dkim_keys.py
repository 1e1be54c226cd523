"""DKIM keys of customer domains in Redis, and the signer used when a message is accepted.

Every key belongs to the account that owns its domain (a verified sender identity), and
signs only that account's mail: a signature says "the owner of this domain sent it", so a
customer writing another customer's domain in From: must not get one. The key is chosen
by the From: domain: its own key, else the key of its registrable domain (DMARC relaxed
alignment), each only when it belongs to the sending account. Keys and owners are cached
in the process for a minute, so signing costs no Redis round trip per message; a key
removed (or a domain taken from an account) may still sign for that minute.

  dkim:keys     hash: domain → JSON (selector, algorithm, private key)
  dkim:owners   hash: domain → login of the account the key belongs to
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable

import redis.asyncio as aioredis

from relay.abuse.content import from_addresses
from relay.errors import NotFound
from relay.redis_client import store_errors, text, text_dict
from reputation import registrable_domain
from reputation.dkim import DkimKey, sign

__all__ = ["DkimKeyStore", "DkimSigner"]

_KEYS = "dkim:keys"
_OWNERS = "dkim:owners"


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
            await self._redis.hdel(_OWNERS, domain.lower())
        if not removed:
            raise NotFound(f"no DKIM key for {domain!r}")

    async def set_owner(self, domain: str, login: str) -> None:
        """The account whose mail the domain's key signs (written before the key: a key
        never exists without its owner)."""
        with store_errors():
            await self._redis.hset(_OWNERS, domain.lower(), login)

    async def owner(self, domain: str) -> str:
        """The login the domain's key belongs to; "" for none (such a key signs nothing)."""
        with store_errors():
            raw = await self._redis.hget(_OWNERS, domain.lower())
        return text(raw) if raw is not None else ""

    async def owners(self) -> dict[str, str]:
        with store_errors():
            return text_dict(await self._redis.hgetall(_OWNERS))

    async def remove_owned(self, login: str, under: str | None = None) -> list[str]:
        """Remove the keys of `login` (only those for `under` and its subdomains, when
        given): the account lost the domain, so its keys must stop signing."""
        removed = []
        for domain, owner in sorted((await self.owners()).items()):
            if owner != login:
                continue
            if under is not None and not (domain == under or domain.endswith("." + under)):
                continue
            with contextlib.suppress(NotFound):
                await self.remove(domain)
            with store_errors():
                await self._redis.hdel(_OWNERS, domain)
            removed.append(domain)
        return removed


class DkimSigner:
    """Signs a message for the account that submitted it, with a key that account owns."""

    def __init__(
        self, store: DkimKeyStore, *, clock: Callable[[], float] = time.time, ttl: float = 60.0
    ) -> None:
        self._store = store
        self._clock = clock
        self._ttl = ttl
        self._cache: dict[str, tuple[float, DkimKey | None, str]] = {}

    async def _key(self, domain: str) -> tuple[DkimKey | None, str]:
        """(the domain's key or None, its owner's login)."""
        now = self._clock()
        hit = self._cache.get(domain)
        if hit is not None and hit[0] > now:
            return hit[1], hit[2]
        owner = await self._store.owner(domain)
        key = await self._store.get(domain) if owner else None
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[domain] = (now + self._ttl, key, owner)
        return key, owner

    async def __call__(self, message: bytes, account: str) -> bytes:
        """The message with a DKIM-Signature in front when its From: domain (or that
        domain's registrable domain) has a key that belongs to `account`."""
        for address_domain in _from_domains(message):
            for domain in dict.fromkeys([address_domain, registrable_domain(address_domain)]):
                if not domain:
                    continue
                key, owner = await self._key(domain)
                if key is not None and owner == account:
                    return sign(message, key, now=int(self._clock())) + message
        return message


def _from_domains(message: bytes) -> list[str]:
    return [address.rpartition("@")[2].lower().rstrip(".") for address in from_addresses(message)]
