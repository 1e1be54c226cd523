"""Accounts in Redis: one hash per login (hash-tagged for Cluster) plus a set of all logins."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import redis.asyncio as aioredis

from relay.accounts.hashing import HashingQueue, shared_queue
from relay.accounts.passwords import VerifiedCache
from relay.clock import Clock
from relay.errors import Busy, InvalidInput, NotFound
from relay.redis_client import load_script, store_errors, text, text_dict

__all__ = [
    "Account",
    "AccountStore",
    "unknown_login",
    "validate_login",
    "validate_password",
]

_LOGIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+=-]{0,127}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
MIN_PASSWORD_LENGTH = 8
_INDEX = "accounts"
_LOG_KEY = secrets.token_bytes(32)
"""Key of the tags that stand for unknown logins in logs (never leaves this process)."""


def validate_login(login: str) -> str:
    if not _LOGIN.fullmatch(login):
        raise InvalidInput(
            f"invalid login {login!r}: 1-128 characters of letters, digits and . _ @ + = -,"
            " starting with a letter or digit"
        )
    return login


def validate_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"password too short: at least {MIN_PASSWORD_LENGTH} characters")
    if any(ch in password for ch in "\r\n\x00"):
        raise InvalidInput("password must not contain line breaks or NUL")
    return password


def _key(login: str) -> str:
    return f"acct:{{{login}}}"


@dataclass(frozen=True)
class Account:
    login: str
    email: str
    created_at: float

    def as_dict(self) -> dict[str, object]:
        return {"login": self.login, "email": self.email, "created_at": self.created_at}


class AccountStore:
    def __init__(
        self, redis: aioredis.Redis, clock: Clock, hashing: HashingQueue | None = None
    ) -> None:
        self._redis = redis
        self._clock = clock
        self._create = load_script(redis, __file__, "create.lua")
        self._verified = VerifiedCache()
        self._hashing = hashing or shared_queue()
        self._key = secrets.token_bytes(32)
        self._checking: dict[tuple[str, bytes], tuple[str | None, asyncio.Future[bool | None]]] = {}
        """(login, keyed hash of the password) → (stored hash, answer) of the checks running."""

    async def add(self, login: str, password: str, email: str = "") -> Account:
        validate_login(login)
        validate_password(password)
        if email and not _EMAIL.fullmatch(email):
            raise InvalidInput(f"invalid contact email {email!r}")
        password_hash = await self._hashing.hash(password)
        account = Account(login=login, email=email, created_at=self._clock.now())
        fields = {
            "login": login,
            "email": email,
            "created_at": repr(account.created_at),
            "password": password_hash,
        }
        # The index may name a login whose hash is gone (never the reverse): it lives in
        # another Cluster slot, so it is written first and read tolerantly.
        with store_errors():
            await self._redis.sadd(_INDEX, login)
            args = [item for pair in fields.items() for item in pair]
            created = await self._create(keys=[_key(login)], args=args)
        if not created:
            raise InvalidInput(f"account {login!r} already exists")
        return account

    async def get(self, login: str) -> Account | None:
        fields = await self._fields(login)
        return _account(fields) if fields else None

    async def require(self, login: str) -> Account:
        account = await self.get(login)
        if account is None:
            raise NotFound(f"no account {login!r}")
        return account

    async def list(self) -> list[Account]:
        with store_errors():
            logins = sorted(text(m) for m in await self._redis.smembers(_INDEX))
        accounts = [await self.get(login) for login in logins]
        return [a for a in accounts if a is not None]

    async def set_password(self, login: str, password: str) -> None:
        await self.require(login)
        validate_password(password)
        password_hash = await self._hashing.hash(password)
        with store_errors():
            await self._redis.hset(_key(login), "password", password_hash)

    async def remove(self, login: str) -> None:
        await self.require(login)
        with store_errors():
            await self._redis.delete(_key(login))
            await self._redis.srem(_INDEX, login)

    async def authenticate(
        self,
        login: str,
        password: str,
        *,
        known: bool = False,
        before_hash: Callable[[], Awaitable[None]] | None = None,
    ) -> Account | None:
        """The account when the password matches; None otherwise (unknown login included).

        A password not in the cache of verified logins is hashed: first `before_hash` runs
        (the AUTH guard counts the attempt as failed until it succeeds, and may refuse it by
        raising), then the check queues for a hashing thread, in the first lane when
        `known` (the client's address is one the login succeeded from). Raises `Busy` when
        its lane is full. The same login and password already being checked (an application
        opening 50 sessions at once) are not hashed again: this check takes that one's
        answer, without `before_hash` (it is the same guess)."""
        # Under a flood, most checks are refused here, before any Redis round trip.
        if self.no_room(login, password, known=known):
            raise Busy("no room in the hashing queue")
        fields = await self._fields(login) if _LOGIN.fullmatch(login) else {}
        stored = fields.get("password")
        if stored and self._verified.hit(login, stored, password):
            return _account(fields)
        ok = await self._same_check(login, password, stored)
        if ok is None:
            ok = await self._check(login, password, stored, known, before_hash)
        if not ok:
            return None
        assert stored is not None
        self._verified.remember(login, stored, password)
        return _account(fields)

    async def _same_check(self, login: str, password: str, stored: str | None) -> bool | None:
        """The answer of the identical check in flight; None when there is none (or it
        never answered: the caller then checks by itself)."""
        pending = self._checking.get((login, self._fingerprint(password)))
        if pending is None or pending[0] != stored:
            return None
        return await asyncio.shield(pending[1])

    async def _check(
        self,
        login: str,
        password: str,
        stored: str | None,
        known: bool,
        before_hash: Callable[[], Awaitable[None]] | None,
    ) -> bool:
        if self._hashing.full(known=known):
            raise Busy("no room in the hashing queue")
        # In flight from here on (no await before), so that identical checks arriving while
        # this one is counted and queued wait for its answer instead of counting again.
        key = (login, self._fingerprint(password))
        answer: asyncio.Future[bool | None] = asyncio.get_running_loop().create_future()
        self._checking[key] = (stored, answer)
        ok: bool | None = None
        try:
            if before_hash is not None:
                await before_hash()
            ok = await self._hashing.verify(stored, password, known=known)
            return ok
        finally:
            answer.set_result(ok)  # None when it never answered (refused, cancelled)
            if self._checking.get(key, (None, None))[1] is answer:
                del self._checking[key]

    def _fingerprint(self, password: str) -> bytes:
        return hmac.new(self._key, password.encode("utf-8", "surrogateescape"), "sha256").digest()

    def no_room(self, login: str, password: str, *, known: bool) -> bool:
        """Whether checking this password would need a hashing thread (it is neither in the
        cache of verified logins nor being checked already) and the lane of such an address
        has no room to wait."""
        return (
            self._hashing.full(known=known)
            and not self._verified.may_hit(login, password)
            and (login, self._fingerprint(password)) not in self._checking
        )

    async def log_name(self, login: str) -> str:
        """How a login someone typed appears in logs: as itself when it is an account, else
        as `unknown:` and a keyed hash, so that a password typed into the login field never
        reaches the logs (the same unknown login gets the same tag within one process)."""
        if _LOGIN.fullmatch(login):
            with store_errors():
                if await self._redis.exists(_key(login)):
                    return login
        return unknown_login(login)

    async def _fields(self, login: str) -> dict[str, str]:
        with store_errors():
            raw = await self._redis.hgetall(_key(login))
        return text_dict(raw)


def unknown_login(login: str) -> str:
    """The log tag of a login that is not an account (or could not be looked up)."""
    mac = hmac.new(_LOG_KEY, login.encode("utf-8", "surrogateescape"), hashlib.sha256)
    return f"unknown:{mac.hexdigest()[:10]}"


def _account(fields: dict[str, str]) -> Account:
    return Account(
        login=fields["login"],
        email=fields.get("email", ""),
        created_at=float(fields.get("created_at", "0")),
    )
