"""Abuse guards of the submission listeners: AUTH brute force and connections per address.

The decisions are pure (`AuthPolicy`, `ConnectionLimits.admit`). AUTH failures are counted
in Redis per login and per client address (an IPv6 client by its /64), so every relay
process sees the same streaks and a restart forgets nothing. Open connections are counted
in the process that holds them (a crashed process takes its counts with it).

Policy, chosen so that an attacker cannot lock a customer out of their own account:
- past `delay_after` failures (of the login or of the address), each failure is answered
  after a delay that doubles up to `max_delay`;
- past `lock_after` failures a login is locked for `lockout`, except from the addresses it
  successfully logged in from within `known_ip_for` (its usual offices and servers);
- past `ip_lock_after` failures an address is locked for every login;
- while locked, AUTH gets `454 4.7.0` without the password being checked (no oracle, and no
  argon2 work for the attacker to make us do); a success ends the login's streak.

Every limit per client address, here and in the server, groups an address by `client_key`
(an IPv6 address by its /64): one customer of an ISP gets a whole /64.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import math
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aioredis
import structlog
from redis.exceptions import NoScriptError, RedisError
from redis.typing import EncodableT

from relay import metrics, replies
from relay.clock import Clock
from relay.config import AuthGuardSettings, Settings
from relay.errors import AuthLocked, StoreUnavailable
from relay.redis_client import load_script, stage_script
from relay.submission.policy import format_wait

__all__ = [
    "Attempt",
    "AuthGuard",
    "AuthPolicy",
    "ConnectionLimits",
    "Locked",
    "Streak",
    "client_key",
]

log = structlog.get_logger("relay.submission")

_KNOWN_MAX = 64
"""Addresses a login remembers at most (the most recent)."""
_REFRESH_KNOWN = 3600.0
"""A success from an address the login is known at, with no streak to end, is written to
Redis at most this often (most logins are of this kind: one Redis call saved per login)."""


@dataclass(frozen=True)
class Streak:
    """Failures in a row of one subject (login or address), as Redis holds them."""

    failures: int = 0
    last: float = 0.0
    """Time of the last failure."""


@dataclass(frozen=True)
class Locked:
    subject: str
    """"login" or "ip"."""
    until: float

    def reply(self, now: float) -> str:
        return replies.AUTH_LOCKED.format(wait=format_wait(self.until - now))


@dataclass(frozen=True)
class AuthPolicy:
    delay_after: int = 3
    first_delay: float = 1.0
    max_delay: float = 8.0
    lock_after: int = 10
    ip_lock_after: int = 30
    window: float = 900.0
    lockout: float = 900.0
    known_ip_for: float = 30 * 86400.0

    @classmethod
    def from_settings(cls, settings: AuthGuardSettings) -> AuthPolicy:
        return cls(
            delay_after=settings.delay_after,
            first_delay=settings.first_delay.seconds,
            max_delay=settings.max_delay.seconds,
            lock_after=settings.lock_after,
            ip_lock_after=settings.ip_lock_after,
            window=settings.window.seconds,
            lockout=settings.lockout.seconds,
            known_ip_for=settings.known_ip_for.seconds,
        )

    @property
    def forget_after(self) -> float:
        """How long after its last failure a streak is kept: long enough to hold its lock."""
        return max(self.window, self.lockout)

    def current(self, streak: Streak, now: float) -> int:
        """Failures that still count now."""
        return streak.failures if now - streak.last < self.forget_after else 0

    def locked(self, login: Streak, ip: Streak, *, known_ip: bool, now: float) -> Locked | None:
        """Whether an AUTH attempt is refused before its password is even checked."""
        if self.current(ip, now) >= self.ip_lock_after and now < ip.last + self.lockout:
            return Locked("ip", ip.last + self.lockout)
        if (
            not known_ip
            and self.current(login, now) >= self.lock_after
            and now < login.last + self.lockout
        ):
            return Locked("login", login.last + self.lockout)
        return None

    def limits(self, *, known_ip: bool) -> tuple[int, int]:
        """Failures at which (the login, the address) lock an attempt, for the atomic count in
        Redis (0: no lock): the same rule as `locked`, a known address exempt from the
        login's."""
        return (0 if known_ip else self.lock_after), self.ip_lock_after

    def delay(self, failures: int) -> float:
        """How long to wait before answering the `failures`-th failure in a row."""
        over = failures - self.delay_after
        if over <= 0 or self.first_delay <= 0:
            return 0.0
        if over > 64:
            return self.max_delay
        return min(self.max_delay, self.first_delay * math.pow(2, over - 1))

    def known(self, seen: float, now: float) -> bool:
        """Whether an address last seen succeeding at `seen` (0: never) is still known."""
        return seen > 0 and now - seen < self.known_ip_for

    def must_record_success(self, login_failures: int, seen: float, now: float) -> bool:
        """A success needs writing when it ends a streak or refreshes an old address."""
        return login_failures > 0 or not (seen > 0 and now - seen < _REFRESH_KNOWN)

    def locks_now(self, login_failures: int, ip_failures: int) -> list[str]:
        """The subjects this failure (counted in the arguments) has just locked."""
        locked = []
        if login_failures == self.lock_after:
            locked.append("login")
        if ip_failures == self.ip_lock_after:
            locked.append("ip")
        return locked


def client_key(ip: str) -> str:
    """The client an address belongs to, for every per-address limit (AUTH streaks, open
    connections): the IPv4 address, or the /64 of an IPv6 one (one customer of an ISP gets
    a whole /64)."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def _login_tag(login: str) -> str:
    # Logins arrive from the network before anything validates them: hash them into the key.
    digest = hashlib.sha256(login.encode("utf-8", "surrogateescape")).hexdigest()[:24]
    return f"guard:{{l:{digest}}}"


def _ip_tag(ip: str) -> str:
    return f"guard:{{ip:{client_key(ip)}}}"


@dataclass(frozen=True)
class AuthState:
    login: Streak
    ip: Streak
    seen: float
    """When the login last succeeded from this address (0: never, or forgotten)."""


@dataclass(frozen=True)
class Counted:
    """What `AuthGuard.count` wrote for one attempt, to take it back on success."""

    stamp: str
    """The `last` it wrote (as Redis holds it)."""
    login_before: str
    """`last` of the login as it was before (what taking it back restores)."""
    login_failures: int
    """Failures of the login with this attempt counted."""


@dataclass
class Attempt:
    """One AUTH attempt as the guard follows it: read (`check`), counted as failed before
    the password is hashed (`count`), then settled (`failure`, `success` or `uncount`)."""

    login: str
    ip: str
    state: AuthState | None
    """None when Redis did not answer (the attempt is let through)."""
    known: bool = False
    """The login succeeded from this address within `known_ip_for`: exempt from its lock,
    and its password check goes first in the hashing queue."""
    locked: Locked | None = None
    counted: Counted | None = None
    busy: bool = False
    """Refused before anything else: no room in the hashing queue for its address."""


class AuthGuard:
    """What the AUTH handler asks before and after checking a password. The Redis side is
    one script call per subject (login, address) per step.

    A password that must be hashed is counted as a failure of its login before it is
    hashed, in the same atomic step that checks the login's lock (`count`), and taken back
    when it turns out right (`success`) or is never checked (`uncount`): concurrent guesses
    at one login cannot all slip under its threshold while their hashes run, and a guesser
    who hangs up before the answer has spent a guess. The address's streak counts failures
    once they are known (`failure`): a shared web server logging in many of its customers at
    once must not lock itself out, and the guesses one address has in flight are bounded by
    the hashing queue anyway. A login found in the cache of verified logins is not counted.

    If Redis does not answer, the guard lets the attempt through: the password check needs
    Redis too and answers 454 by itself.
    """

    def __init__(
        self, redis: aioredis.Redis, policy: AuthPolicy, clock: Clock, store_timeout: float = 2.0
    ) -> None:
        self.policy = policy
        self._redis = redis
        self._clock = clock
        self._timeout = store_timeout
        self._script = load_script(redis, __file__, "guard.lua")

    @classmethod
    def from_settings(cls, redis: aioredis.Redis, settings: Settings, clock: Clock) -> AuthGuard:
        """The guard of the config: `submission.auth_guard`, within `redis.timeout`."""
        policy = AuthPolicy.from_settings(settings.submission.auth_guard)
        return cls(redis, policy, clock, settings.redis.timeout.seconds)

    async def check(
        self, login: str, ip: str, *, no_room: Callable[[bool], bool] | None = None
    ) -> Attempt:
        """Read both streaks; `locked` is set when the attempt is refused outright.

        `no_room(known)`: whether the password check of an attempt from a known address (or
        not) would find no room to wait for hashing. While it does for unknown addresses
        (a flood), the login's streak is read first, and an attempt from an address unknown
        to the login comes back `busy` without the address's being read: half the Redis work
        per refused guess, so that the customers' own logins wait less behind them."""
        now = self._clock.now()
        try:
            async with asyncio.timeout(self._timeout):
                if no_room is None or not no_room(False):
                    state = await self.state(login, ip, now)
                else:
                    login_streak, seen = await self._call(
                        "get", _login_tag(login), now, client_key(ip)
                    )
                    if not self.policy.known(seen, now) and no_room(False):
                        return Attempt(login, ip, None, busy=True)
                    ip_streak, _ = await self._call("get", _ip_tag(ip), now, "")
                    state = AuthState(login_streak, ip_streak, seen)
        except (StoreUnavailable, TimeoutError) as exc:
            log.error("auth.guard_unavailable", peer=ip, error=str(exc) or "timeout")
            return Attempt(login, ip, None)
        known = self.policy.known(state.seen, now)
        locked = self.policy.locked(state.login, state.ip, known_ip=known, now=now)
        return Attempt(login, ip, state, known, locked)

    async def count(self, attempt: Attempt) -> None:
        """Count the attempt as failed before its password is hashed; raises `AuthLocked`
        (and sets `attempt.locked`) when a concurrent attempt got there first."""
        now = self._clock.now()
        stamp = repr(now)
        login_limit, _ = self.policy.limits(known_ip=attempt.known)
        try:
            async with asyncio.timeout(self._timeout):
                login = await self._try(_login_tag(attempt.login), stamp, login_limit)
        except (StoreUnavailable, TimeoutError) as exc:
            log.error("auth.guard_unavailable", peer=attempt.ip, error=str(exc) or "timeout")
            return
        if login.counted:
            attempt.counted = Counted(stamp, login.before, login.streak.failures)
            return
        attempt.locked = Locked("login", login.streak.last + self.policy.lockout)
        raise AuthLocked(attempt.locked.reply(now))

    def refused(self, attempt: Attempt, shown: str) -> str:
        """Log the refusal of a locked attempt; the `454 4.7.0` to answer it with.

        `shown`: the login as logs may show it (an account's login, else a tag)."""
        locked = attempt.locked
        assert locked is not None
        log.warning(
            "auth.refused_locked",
            login=shown,
            peer=attempt.ip,
            locked=locked.subject,
            until=round(locked.until, 3),
        )
        return locked.reply(self._clock.now())

    async def failure(self, attempt: Attempt, shown: str) -> float:
        """The password was wrong: the seconds to wait before answering it. Counted already
        (by `count`), unless Redis was away then: it is counted now if it can be."""
        now = self._clock.now()
        try:
            async with asyncio.timeout(self._timeout):
                if attempt.counted is not None:  # the login's is counted; the address's now
                    login_failures = attempt.counted.login_failures
                    ip_streak, _ = await self._call("fail", _ip_tag(attempt.ip), now, "")
                    ip_failures = ip_streak.failures
                else:
                    login_failures, ip_failures = await self.failed(attempt.login, attempt.ip, now)
        except (StoreUnavailable, TimeoutError) as exc:
            log.error("auth.guard_unavailable", peer=attempt.ip, error=str(exc) or "timeout")
            return self.policy.delay(self.policy.delay_after + 1)
        metrics.record("auth_failures")
        for subject in self.policy.locks_now(login_failures, ip_failures):
            metrics.record("auth_locks")
            log.warning(
                "auth.locked",
                subject=subject,
                login=shown,
                peer=attempt.ip,
                failures=login_failures if subject == "login" else ip_failures,
                until=round(now + self.policy.lockout, 3),
            )
        return self.policy.delay(max(login_failures, ip_failures))

    async def success(self, attempt: Attempt) -> None:
        """End the login's streak (its count included) and remember the address."""
        now = self._clock.now()
        counted = attempt.counted
        attempt.counted = None
        if counted is None and attempt.state is not None:
            state = attempt.state
            if not self.policy.must_record_success(
                self.policy.current(state.login, now), state.seen, now
            ):
                return
        try:
            async with asyncio.timeout(self._timeout):
                await self.succeeded(attempt.login, attempt.ip, now)
        except (StoreUnavailable, TimeoutError) as exc:
            log.error("auth.guard_unavailable", peer=attempt.ip, error=str(exc) or "timeout")

    async def uncount(self, attempt: Attempt) -> None:
        """The password was never checked (hashing queue full, store down): not a failure."""
        counted = attempt.counted
        attempt.counted = None
        if counted is None:
            return
        now = self._clock.now()
        try:
            async with asyncio.timeout(self._timeout):
                await self._undo(
                    _login_tag(attempt.login), now, counted.stamp, counted.login_before
                )
        except (StoreUnavailable, TimeoutError) as exc:
            log.error("auth.guard_unavailable", peer=attempt.ip, error=str(exc) or "timeout")

    async def state(self, login: str, ip: str, now: float) -> AuthState:
        """Both streaks in one round trip (a pipeline of the two scripts: they touch the
        login's slot and the address's)."""
        calls = [
            self._args("get", _login_tag(login), repr(now), client_key(ip), 0, "0"),
            self._args("get", _ip_tag(ip), repr(now), "", 0, "0"),
        ]
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for keys, args in calls:
                    stage_script(pipe, self._script, keys, args)
                replies = await pipe.execute(raise_on_error=False)
            if any(isinstance(reply, NoScriptError) for reply in replies):  # Redis restarted
                replies = [await self._script(keys=keys, args=args) for keys, args in calls]
        except RedisError as exc:
            raise StoreUnavailable(f"redis: {exc}") from None
        for reply in replies:
            if isinstance(reply, RedisError):
                raise StoreUnavailable(f"redis: {reply}")
        (login_streak, seen), (ip_streak, _) = (_streak(reply) for reply in replies)
        return AuthState(login_streak, ip_streak, seen)

    async def failed(self, login: str, ip: str, now: float) -> tuple[int, int]:
        """Count one failure; (failures of the login, failures of the address) after it."""
        (login_streak, _), (ip_streak, _) = await asyncio.gather(
            self._call("fail", _login_tag(login), now, ""),
            self._call("fail", _ip_tag(ip), now, ""),
        )
        return login_streak.failures, ip_streak.failures

    async def succeeded(self, login: str, ip: str, now: float) -> None:
        """End the login's streak and remember the address (the address's streak stays)."""
        await self._call("ok", _login_tag(login), now, client_key(ip))

    async def _try(self, tag: str, stamp: str, limit: int) -> _Tried:
        """Count one failure unless the subject is locked at `limit` failures (0: never)."""
        raw = await self._raw("try", tag, stamp, "", limit, repr(self.policy.lockout))
        failures, last, _, admitted, before = raw
        return _Tried(Streak(int(failures), float(last)), bool(int(admitted)), _text(before))

    async def _undo(self, tag: str, now: float, stamp: str, before: str) -> None:
        await self._raw("undo", tag, repr(now), "", stamp, before)

    async def _call(self, mode: str, tag: str, now: float, ip: str) -> tuple[Streak, float]:
        return _streak(await self._raw(mode, tag, repr(now), ip, 0, "0"))

    def _args(
        self, mode: str, tag: str, now: str, ip: str, arg7: int | str, arg8: str
    ) -> tuple[list[str], list[EncodableT]]:
        policy = self.policy
        keys = [f"{tag}:streak", f"{tag}:known"]
        args: list[EncodableT] = [
            mode,
            now,
            repr(policy.forget_after),
            ip,
            repr(policy.known_ip_for),
            _KNOWN_MAX,
            arg7,
            arg8,
        ]
        return keys, args

    async def _raw(
        self, mode: str, tag: str, now: str, ip: str, arg7: int | str, arg8: str
    ) -> list[bytes | int]:
        keys, args = self._args(mode, tag, now, ip, arg7, arg8)
        try:
            raw: list[bytes | int] = await self._script(keys=keys, args=args)
        except RedisError as exc:
            raise StoreUnavailable(f"redis: {exc}") from None
        return raw


@dataclass(frozen=True)
class _Tried:
    streak: Streak
    counted: bool
    before: str
    """`last` before this count, as Redis held it."""


def _text(value: bytes | int) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class ConnectionLimits:
    """Open sessions of this process, in all and per client (`client_key`: IPv6 by /64)."""

    def __init__(self, total: int, per_ip: int) -> None:
        self.total = total
        self.per_ip = per_ip
        self._open = 0
        self._by_client: dict[str, int] = {}

    @property
    def open(self) -> int:
        return self._open

    def admit(self, ip: str) -> str | None:
        """Count one more session from `ip`, or return the 421 that refuses it."""
        if self._open >= self.total:
            return str(replies.TOO_MANY_CONNECTIONS)
        key = client_key(ip)
        if self._by_client.get(key, 0) >= self.per_ip:
            return replies.TOO_MANY_FROM_IP.format(ip=key)
        self._open += 1
        self._by_client[key] = self._by_client.get(key, 0) + 1
        return None

    def release(self, ip: str) -> None:
        key = client_key(ip)
        count = self._by_client.get(key, 0)
        if count <= 0:
            return
        self._open -= 1
        if count == 1:
            del self._by_client[key]
        else:
            self._by_client[key] = count - 1


def _streak(raw: list[bytes | int]) -> tuple[Streak, float]:
    """(the streak, when the address was last seen to succeed) from the script's reply."""
    failures, last, seen, _, _ = raw
    return Streak(int(failures), float(last)), float(seen)
