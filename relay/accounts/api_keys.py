"""API keys of a credential: for the HTTP send API, shown once, stored hashed, revocable.

A key is `rk_<id>_<secret>`: the id (8 random bytes, hex) finds the record in one read; the
secret is 32 random bytes (256 bits). Only HMAC-SHA256 of the secret is stored.

Why a fast hash and not argon2 as for passwords: argon2 is slow on purpose so that guessing a
*low-entropy* secret (a password a person chose) from a stolen hash costs years. A secret of
256 random bits cannot be guessed whatever the hash costs, so slowness buys nothing and would
cost 50-100 ms of CPU on every API request. A stolen Redis gives hashes that cannot be turned
back into keys. The HMAC key is a fixed label: it separates these hashes from any other
SHA-256 use, and the comparison is constant-time.

Scope: a key sends mail and reads the account's own events and suppression list (the
application's surface), never the operator's commands.

A process remembers the keys it verified for `cache_for` seconds (`http.api_key_cache`, 5 s
by default): reading the record on every request was one Redis round trip per message that
an SMTP session pays once per AUTH. So `relay apikey revoke` (another process) ends a key
within that time on every process, and at once on the process that revokes it; 0 reads the
record on every request. Only the stored hash is remembered, never a secret: a cached key is
still compared with the secret presented, in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections import OrderedDict
from dataclasses import dataclass

import redis.asyncio as aioredis

from relay.clock import Clock
from relay.errors import NotFound
from relay.redis_client import store_errors, text, text_dict

__all__ = ["ApiKey", "ApiKeys", "VerifiedKeys", "hash_secret"]

_FORMAT = re.compile(r"rk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
_LABEL = b"relay api key v1"
SCOPE = "send"


def hash_secret(secret: str) -> str:
    return hmac.new(_LABEL, secret.encode(), hashlib.sha256).hexdigest()


def _key(key_id: str) -> str:
    return f"apikey:{key_id}"


def _index(login: str) -> str:
    return f"apikeys:{{{login}}}"


@dataclass(frozen=True)
class ApiKey:
    id: str
    login: str
    created_at: float
    scope: str
    note: str = ""
    revoked_at: float | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "login": self.login,
            "created_at": self.created_at,
            "scope": self.scope,
            "note": self.note,
            "revoked_at": self.revoked_at,
        }


def _parse(key_id: str, fields: dict[str, str]) -> ApiKey:
    revoked = fields.get("revoked_at", "")
    return ApiKey(
        id=key_id,
        login=fields["login"],
        created_at=float(fields["created_at"]),
        scope=fields.get("scope", SCOPE),
        note=fields.get("note", ""),
        revoked_at=float(revoked) if revoked else None,
    )


class VerifiedKeys:
    """Key records read from Redis in the last `ttl` seconds, by key id (at most `size`, the
    oldest read forgotten first). Pure: the caller gives the time."""

    def __init__(self, ttl: float, size: int = 10_000) -> None:
        self.ttl = ttl
        self._size = size
        self._found: OrderedDict[str, tuple[float, str, ApiKey]] = OrderedDict()

    def get(self, key_id: str, secret_hash: str, now: float) -> ApiKey | None:
        """The key when its record was read less than `ttl` ago and `secret_hash` is its
        hash; None: read the record."""
        found = self._found.get(key_id)
        if found is None:
            return None
        read_at, stored_hash, key = found
        if not read_at <= now < read_at + self.ttl:
            del self._found[key_id]
            return None
        return key if hmac.compare_digest(stored_hash, secret_hash) else None

    def put(self, key: ApiKey, stored_hash: str, now: float) -> None:
        if self.ttl <= 0:
            return
        self._found.pop(key.id, None)
        self._found[key.id] = (now, stored_hash, key)
        while len(self._found) > self._size:
            self._found.popitem(last=False)

    def forget(self, key_id: str) -> None:
        self._found.pop(key_id, None)


class ApiKeys:
    def __init__(self, redis: aioredis.Redis, clock: Clock, *, cache_for: float = 0.0) -> None:
        """`cache_for`: seconds a verified key is taken without reading its record again
        (0: read on every request)."""
        self._redis = redis
        self._clock = clock
        self._verified = VerifiedKeys(cache_for)

    async def add(self, login: str, note: str = "") -> tuple[ApiKey, str]:
        """A new key for `login`: (its record, the key itself — shown once, never stored)."""
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        record = ApiKey(key_id, login, self._clock.now(), SCOPE, note[:200])
        with store_errors():
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hset(
                    _key(key_id),
                    mapping={
                        "login": login,
                        "hash": hash_secret(secret),
                        "created_at": repr(record.created_at),
                        "scope": SCOPE,
                        "note": record.note,
                    },
                )
                pipe.sadd(_index(login), key_id)
                await pipe.execute()
        return record, f"rk_{key_id}_{secret}"

    async def list(self, login: str) -> list[ApiKey]:
        with store_errors():
            ids = sorted(text(i) for i in await self._redis.smembers(_index(login)))
            keys = []
            for key_id in ids:
                fields = text_dict(await self._redis.hgetall(_key(key_id)))
                if fields:
                    keys.append(_parse(key_id, fields))
        return sorted(keys, key=lambda k: k.created_at)

    async def revoke(self, login: str, key_id: str) -> ApiKey:
        """Ends the key at once; kept (revoked) so `list` still shows it."""
        with store_errors():
            fields = text_dict(await self._redis.hgetall(_key(key_id)))
            if not fields or fields.get("login") != login:
                raise NotFound(f"no API key {key_id!r} for {login}")
            if not fields.get("revoked_at"):
                fields["revoked_at"] = repr(self._clock.now())
                await self._redis.hset(_key(key_id), "revoked_at", fields["revoked_at"])
        self._verified.forget(key_id)
        return _parse(key_id, fields)

    async def remove_all(self, login: str) -> int:
        """Forget every key of a login (its account is removed)."""
        with store_errors():
            ids = [text(i) for i in await self._redis.smembers(_index(login))]
            if ids:
                await self._redis.delete(*[_key(i) for i in ids])
            await self._redis.delete(_index(login))
        for key_id in ids:
            self._verified.forget(key_id)
        return len(ids)

    async def authenticate(self, presented: str) -> ApiKey | None:
        """The live key `presented` is, or None (malformed, unknown, wrong, revoked)."""
        match = _FORMAT.fullmatch(presented.strip())
        if match is None:
            return None
        key_id, secret = match.groups()
        presented_hash, now = hash_secret(secret), self._clock.now()
        cached = self._verified.get(key_id, presented_hash, now)
        if cached is not None:
            return cached
        with store_errors():
            fields = text_dict(await self._redis.hgetall(_key(key_id)))
        if not fields or fields.get("revoked_at"):
            return None
        stored_hash = fields.get("hash", "")
        if not hmac.compare_digest(stored_hash, presented_hash):
            return None
        key = _parse(key_id, fields)
        self._verified.put(key, stored_hash, now)
        return key
