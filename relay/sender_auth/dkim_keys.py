"""DKIM keys of customer domains in Redis, and the signer used when a message is accepted.

The key is chosen by the From: domain: its own key, else the key of its registrable domain
(DMARC relaxed alignment). Keys are cached in the process for a minute, so signing costs no
Redis round trip per message. Private keys are stored encrypted (`key_vault`); a key that
cannot be decrypted leaves mail unsigned and logged, never refused.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aioredis
import structlog

from relay.abuse.content import from_addresses
from relay.errors import NotFound
from relay.redis_client import store_errors, text
from relay.sender_auth.key_vault import KeyVault, KeyVaultError, is_sealed, sealed_key_id
from reputation import registrable_domain
from reputation.dkim import DkimKey, RelaxedBodyHash, sign

__all__ = ["DkimKeyStore", "DkimSigner", "RekeyReport"]

_KEYS = "dkim:keys"
_HEAD_END = re.compile(rb"\r?\n\r?\n")

log = structlog.get_logger("relay.dkim")

# HSET only when the entry is still the one read (compare-and-set).
_SWAP = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"""


@dataclass
class RekeyReport:
    key_id: str = ""
    """The current key, which now encrypts every stored key ("" when none is stored)."""
    from_clear: int = 0
    from_old_keys: int = 0
    unchanged: int = 0
    """Already encrypted with the current key."""
    changed_meanwhile: int = 0
    """Replaced by another writer between the read and the write; left as written."""


class DkimKeyStore:
    def __init__(self, redis: aioredis.Redis, vault: KeyVault) -> None:
        self._redis = redis
        self._vault = vault

    async def put(self, key: DkimKey) -> None:
        value = json.dumps(
            {
                "selector": key.selector,
                "algorithm": key.algorithm,
                "private_pem": self._vault.seal(key.private_pem, context=_context(key.domain)),
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
            domain.lower(), data["selector"], data["algorithm"], self._private_pem(domain, data)
        )

    def _private_pem(self, domain: str, data: dict[str, str]) -> bytes:
        stored = data["private_pem"]
        if is_sealed(stored):
            return self._vault.open(stored, context=_context(domain))
        # Stored before keys were encrypted: usable, until `relay dkim rekey` encrypts it.
        log.warning("dkim.key_in_clear", domain=domain.lower(), fix="relay dkim rekey")
        return stored.encode()

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

    async def rekey(self) -> RekeyReport:
        """Encrypt every stored private key with the vault's current key: those under an old
        key, and those stored in clear. Every key is decrypted before anything is written, so
        a key that cannot be read stops the command with nothing changed. An entry replaced
        meanwhile (`relay dkim add`) is left as the new writer made it."""
        with store_errors():
            entries = {text(k): text(v) for k, v in (await self._redis.hgetall(_KEYS)).items()}
        stored = {domain: json.loads(value) for domain, value in entries.items()}
        sealed = [d for d, data in stored.items() if is_sealed(data["private_pem"])]
        current = self._vault.current.key_id if sealed else None
        report = RekeyReport()
        writes = []
        for domain, data in sorted(stored.items()):
            if current is not None and sealed_key_id(data["private_pem"]) == current:
                report.unchanged += 1
                continue
            if domain in sealed:
                pem = self._vault.open(data["private_pem"], context=_context(domain))
                report.from_old_keys += 1
            else:
                pem = data["private_pem"].encode()
                report.from_clear += 1
            writes.append((domain, {**data, "private_pem": pem}))
        for domain, data in writes:
            data["private_pem"] = self._vault.seal(data["private_pem"], context=_context(domain))
            with store_errors():
                swapped = await self._redis.eval(
                    _SWAP, 1, _KEYS, domain, entries[domain], json.dumps(data)
                )
            report.changed_meanwhile += 0 if swapped else 1
        report.key_id = self._vault.current.key_id if writes or sealed else ""
        return report


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
        try:
            key = await self._store.get(domain)
        except KeyVaultError as exc:  # fail closed: unsigned, logged once per ttl
            log.error("dkim.key_unavailable", domain=domain, error=str(exc))
            key = None
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

    async def sign_whole(self, message: bytes) -> bytes:
        """A message held whole in memory (not streamed to the spool), signed if it can be."""
        end = _HEAD_END.search(message)
        head, body = (message[: end.end()], message[end.end() :]) if end else (message, b"")
        body_hash = RelaxedBodyHash()
        body_hash.update(body)
        return await self(head, body_hash.b64digest()) + message


def _context(domain: str) -> str:
    """What a sealed key is bound to: the value of one domain does not open as another's."""
    return f"dkim:{domain.lower()}"


def _from_domains(message: bytes) -> list[str]:
    return [address.rpartition("@")[2].lower().rstrip(".") for address in from_addresses(message)]
