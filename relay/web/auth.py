"""Who may use the web console and the API: operators, their tokens, customers, the session key.

- **Operators** are named accounts of their own (`relay operator add NAME --role viewer|admin`),
  stored in Redis with an argon2id hash made by the same hashing queue as SMTP logins. A
  `viewer` reads everything; an `admin` also acts (lift, deny, hold, disable...).
- **Bearer tokens** for scripts (`relay operator token NAME`): 32 random bytes, stored as their
  SHA-256 only (too long to guess, so no argon2 and no guard), carrying the operator's role.
- **Customers** log in with their SMTP credential and see their own account only.
- Every password login, operator or customer, goes through the SMTP AUTH brute-force guard
  (`relay.submission.guard.AuthGuard`): the same delays, locks and known-address exemption.
  Operators are counted under `operator:NAME`, so an operator and a customer of the same
  name do not share a streak.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import redis.asyncio as aioredis
import structlog

from relay.accounts import AccountStore
from relay.accounts.hashing import HashingQueue, shared_queue
from relay.config import HttpSettings
from relay.errors import AuthLocked, Busy, InvalidInput, NotFound, StoreUnavailable
from relay.private_files import write_private
from relay.redis_client import store_errors, text, text_dict
from relay.submission.guard import AuthGuard

__all__ = [
    "LoginOutcome",
    "Operator",
    "OperatorStore",
    "Principal",
    "Role",
    "guarded_login",
    "session_secret",
]

log = structlog.get_logger("relay.web")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_INDEX = "operators"
_TOKENS = "operator:tokens"
MIN_PASSWORD_LENGTH = 12


class Role(StrEnum):
    VIEWER = "viewer"
    ADMIN = "admin"


@dataclass(frozen=True)
class Operator:
    name: str
    role: Role
    created_at: float

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "role": self.role.value, "created_at": self.created_at}


@dataclass(frozen=True)
class Principal:
    """Who a request comes from, once authenticated."""

    kind: str
    """`operator` or `customer`."""
    name: str
    role: Role | None = None
    """An operator's role; None for a customer."""

    @property
    def actor(self) -> str:
        """As the audit log records it: `operator:NAME@web` (the CLI records
        `operator:<OS user>`; the suffix keeps a web operator apart from an OS user of the
        same name), `user:LOGIN` for a customer."""
        return f"operator:{self.name}@web" if self.kind == "operator" else f"user:{self.name}"

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


def _key(name: str) -> str:
    return f"operator:{{{name}}}"


def _token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def validate_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise InvalidInput(
            f"invalid operator name {name!r}: 1-64 letters, digits and . _ -,"
            " starting with a letter or digit"
        )
    return name


class OperatorStore:
    def __init__(self, redis: aioredis.Redis, hashing: HashingQueue | None = None) -> None:
        self._redis = redis
        self._hashing = hashing or shared_queue()

    async def add(self, name: str, password: str, role: Role, now: float) -> Operator:
        validate_name(name)
        if len(password) < MIN_PASSWORD_LENGTH or any(c in password for c in "\r\n\x00"):
            raise InvalidInput(
                f"operator password: at least {MIN_PASSWORD_LENGTH} characters, one line"
            )
        password_hash = await self._hashing.hash(password)
        with store_errors():
            created = await self._redis.hsetnx(_key(name), "name", name)
            if not created:
                raise InvalidInput(f"operator {name!r} already exists")
            await self._redis.hset(
                _key(name),
                mapping={"role": role.value, "created_at": repr(now), "password": password_hash},
            )
            await self._redis.sadd(_INDEX, name)
        return Operator(name, role, now)

    async def get(self, name: str) -> Operator | None:
        if not _NAME.fullmatch(name):
            return None
        with store_errors():
            fields = text_dict(await self._redis.hgetall(_key(name)))
        if "role" not in fields:
            return None
        return Operator(name, Role(fields["role"]), float(fields.get("created_at", "0")))

    async def list(self) -> list[Operator]:
        with store_errors():
            names = sorted(text(n) for n in await self._redis.smembers(_INDEX))
        found = [await self.get(n) for n in names]
        return [o for o in found if o is not None]

    async def remove(self, name: str) -> None:
        if await self.get(name) is None:
            raise NotFound(f"no operator {name!r}")
        with store_errors():
            await self._redis.delete(_key(name))
            await self._redis.srem(_INDEX, name)
            tokens = await self._redis.hgetall(_TOKENS)
            for digest, owner in tokens.items():
                if text(owner) == name:
                    await self._redis.hdel(_TOKENS, digest)

    async def set_password(self, name: str, password: str) -> None:
        if await self.get(name) is None:
            raise NotFound(f"no operator {name!r}")
        password_hash = await self._hashing.hash(password)
        with store_errors():
            await self._redis.hset(_key(name), "password", password_hash)

    async def new_token(self, name: str) -> str:
        """A bearer token for scripts, shown once: only its digest is kept."""
        if await self.get(name) is None:
            raise NotFound(f"no operator {name!r}")
        token = "rlt_" + secrets.token_urlsafe(32)
        with store_errors():
            await self._redis.hset(_TOKENS, _token_digest(token), name)
        return token

    async def by_token(self, token: str) -> Operator | None:
        if not token.startswith("rlt_") or len(token) > 100:
            return None
        with store_errors():
            name = await self._redis.hget(_TOKENS, _token_digest(token))
        return await self.get(text(name)) if name else None

    def no_room(self, name: str, password: str, known: bool) -> bool:
        return self._hashing.full(known=known)

    async def authenticate(
        self,
        name: str,
        password: str,
        *,
        known: bool = False,
        before_hash: Callable[[], Awaitable[None]] | None = None,
    ) -> Operator | None:
        """The operator when the password matches (an unknown name costs the same hash)."""
        stored = None
        if _NAME.fullmatch(name):
            with store_errors():
                raw = await self._redis.hget(_key(name), "password")
            stored = text(raw) if raw else None
        if self._hashing.full(known=known):
            raise Busy("no room in the hashing queue")
        if before_hash is not None:
            await before_hash()
        if not await self._hashing.verify(stored, password, known=known):
            return None
        return await self.get(name)


@dataclass(frozen=True)
class LoginOutcome:
    """What a password login came to: `who` on success, else a one-line `error` and the
    HTTP status to answer with (401 wrong, 429 locked, 503 busy or Redis away)."""

    who: str | None
    error: str = ""
    status: int = 200


_WRONG = "wrong login or password"


async def guarded_login(
    guard: AuthGuard,
    *,
    subject: str,
    ip: str,
    check: Callable[..., Awaitable[object | None]],
    no_room: Callable[[bool], bool],
    shown: Callable[[], Awaitable[str]],
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> LoginOutcome:
    """One password login through the SMTP AUTH guard, step for step as the AUTH handler
    does it (relay/submission/handler.py): refused while locked, counted before hashing,
    slowed down after failures, the streak ended by a success.

    `subject`: the login as the guard counts it; `check(known=, before_hash=)` returns the
    account or operator, or None; `shown()` names the login for logs."""
    attempt = await guard.check(subject, ip, no_room=no_room)
    if attempt.locked is not None:
        message = guard.refused(attempt, await shown())
        return LoginOutcome(None, _locked_text(message), 429)
    try:
        if attempt.busy:
            raise Busy("no room in the hashing queue")
        who = await check(known=attempt.known, before_hash=functools.partial(guard.count, attempt))
    except AuthLocked as exc:
        return LoginOutcome(None, _locked_text(str(exc)), 429)
    except (Busy, StoreUnavailable) as exc:
        await guard.uncount(attempt)
        log.info("web.login_busy", peer=ip, error=str(exc))
        return LoginOutcome(None, "too many logins in progress, try again in a moment", 503)
    if who is None:
        name = await shown()
        delay = await guard.failure(attempt, name)
        log.warning("web.login_failed", login=name, peer=ip, delay=delay)
        await sleep(delay)
        return LoginOutcome(None, _WRONG, 401)
    await guard.success(attempt)
    return LoginOutcome(str(getattr(who, "login", None) or getattr(who, "name", "")))


def _locked_text(reply: str) -> str:
    """`454 4.7.0 Too many failed logins; try again in 15m00s` → the human part."""
    return reply.split(" ", 2)[-1] if reply[:3].isdigit() else reply


async def customer_login(
    guard: AuthGuard, accounts: AccountStore, login: str, password: str, ip: str
) -> LoginOutcome:
    return await guarded_login(
        guard,
        subject=login,
        ip=ip,
        check=functools.partial(accounts.authenticate, login, password),
        no_room=lambda known: accounts.no_room(login, password, known=known),
        shown=functools.partial(accounts.log_name, login),
    )


async def operator_login(
    guard: AuthGuard, operators: OperatorStore, name: str, password: str, ip: str
) -> LoginOutcome:
    async def shown() -> str:
        return f"operator:{name}" if await operators.get(name) else "operator:?"

    return await guarded_login(
        guard,
        subject=f"operator:{name}",
        ip=ip,
        check=functools.partial(operators.authenticate, name, password),
        no_room=lambda known: operators.no_room(name, password, known),
        shown=shown,
    )


def session_secret(settings: HttpSettings) -> bytes:
    """The key that signs session cookies: from `secret_env`, else `secret_file`, created
    (0600) when missing. Several processes starting at once agree: the file is written under
    a temporary name and linked into place, and whoever loses the race reads the winner's."""
    if settings.secret_env:
        value = os.environ.get(settings.secret_env, "")
        if len(value) < 16:
            raise InvalidInput(
                f"http.secret_env: ${settings.secret_env} must hold at least 16 characters"
            )
        return value.encode()
    path = Path(settings.secret_file)
    if not path.exists():
        temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        write_private(temp, base64.b64encode(secrets.token_bytes(32)) + b"\n")
        try:
            os.link(temp, path)
        except FileExistsError:
            pass
        finally:
            temp.unlink()
    data = path.read_bytes().strip()
    if len(data) < 16:
        raise InvalidInput(f"http.secret_file: {path} holds less than 16 bytes")
    return data


def same_token(a: str, b: str) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(a.encode(), b.encode())
