"""DKIM keys of customer domains in Redis, and the signer used when a message is accepted.

Every key belongs to the account that owns its domain (a verified sender identity), and
signs only that account's mail: a signature says "the owner of this domain sent it", so a
customer writing another customer's domain in From: must not get one. The key is chosen
by the From: domain: its own key, else the key of its registrable domain (DMARC relaxed
alignment), each only when it belongs to the sending account. Keys and owners are cached
in the process for a minute, so signing costs no Redis round trip per message; a key
removed (or a domain taken from an account) may still sign for that minute.
Private keys are stored encrypted (`key_vault`); a key that cannot be decrypted leaves mail
unsigned and logged, never refused.

  dkim:keys     hash: domain → JSON (selector, algorithm, private key)
  dkim:owners   hash: domain → login of the account the key belongs to
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aioredis
import structlog

from relay.abuse.content import from_addresses
from relay.address import domain_of
from relay.config import SenderAuthSettings
from relay.errors import NotFound, StoreUnavailable
from relay.redis_client import store_errors, text, text_dict
from relay.sender_auth.key_vault import KeyVault, KeyVaultError, is_sealed, sealed_key_id
from reputation import registrable_domain
from reputation.dkim import DkimKey, RelaxedBodyHash, sign

__all__ = ["DkimKeyStore", "DkimSigner", "RekeyReport"]

_KEYS = "dkim:keys"
_OWNERS = "dkim:owners"
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

    @classmethod
    def from_settings(cls, redis: aioredis.Redis, settings: SenderAuthSettings) -> DkimKeyStore:
        return cls(redis, KeyVault.from_settings(settings))

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
            await self._redis.hdel(_OWNERS, domain.lower())
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
        self._owners: tuple[float, frozenset[str]] | None = None
        """(until when, the logins that own a key), read again every `ttl`."""

    async def signs_for(self, account: str) -> bool:
        """Whether the account owns any key, so that its mail may need a signature: only
        then is a body hashed as it arrives. Cached like the keys (a key just added signs
        within `ttl`); when Redis does not answer, True (hashing costs time, not mail)."""
        now = self._clock()
        if self._owners is None or self._owners[0] <= now:
            try:
                owners = frozenset((await self._store.owners()).values())
            except StoreUnavailable as exc:
                log.warning("dkim.owners_unavailable", error=str(exc))
                return True
            self._owners = (now + self._ttl, owners)
        return account in self._owners[1]

    async def _key(self, domain: str) -> tuple[DkimKey | None, str]:
        """(the domain's key or None, its owner's login)."""
        now = self._clock()
        hit = self._cache.get(domain)
        if hit is not None and hit[0] > now:
            return hit[1], hit[2]
        owner = await self._store.owner(domain)
        try:
            key = await self._store.get(domain) if owner else None
        except KeyVaultError as exc:  # fail closed: unsigned, logged once per ttl
            log.error("dkim.key_unavailable", domain=domain, error=str(exc))
            key = None
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[domain] = (now + self._ttl, key, owner)
        return key, owner

    async def __call__(self, headers: bytes, body_hash: str, account: str) -> bytes:
        """The DKIM-Signature field for a message with this header section and body hash (the
        body itself stays in the spool), when its From: domain (or that domain's registrable
        domain) has a key that belongs to `account`; else b""."""
        for address_domain in _from_domains(headers):
            for domain in dict.fromkeys([address_domain, registrable_domain(address_domain)]):
                if not domain:
                    continue
                key, owner = await self._key(domain)
                if key is not None and owner == account:
                    return sign(headers, key, now=int(self._clock()), body_hash=body_hash)
        return b""

    async def sign_whole(self, message: bytes, account: str) -> bytes:
        """A message held whole in memory (not streamed to the spool), signed if it can be."""
        end = _HEAD_END.search(message)
        head, body = (message[: end.end()], message[end.end() :]) if end else (message, b"")
        body_hash = RelaxedBodyHash()
        body_hash.update(body)
        return await self(head, body_hash.b64digest(), account) + message


def _context(domain: str) -> str:
    """What a sealed key is bound to: the value of one domain does not open as another's."""
    return f"dkim:{domain.lower()}"


def _from_domains(message: bytes) -> list[str]:
    return [domain_of(address) for address in from_addresses(message)]
