"""The fleet-wide gate of the shaping rules, in Redis, and what a worker asks of it.

Every process of every node asks the same keys, so two processes never exceed one rule
together: a rule's rate per egress IP is paced (GCRA without burst) and a reservation is a
time to send at, which the worker sleeps until; its connection limits are leases that end
by themselves when a process dies; a reaction to a provider's reply suspends an IP for the
rule, or slows it down, for every process at once.

Redis is asked as little as the guarantees allow, because with `appendfsync always` each
write costs a disk flush: a process busy with a destination reserves a run of consecutive
send times at once (as many as it used in the last 100 ms, plus one, at most 100 ms of
them) and hands them out itself; a send time not used within its step (or `LATE`) is
dropped, so sends stay as spaced as the rule says (a process with sparse traffic thus asks
about once per message). It keeps a connection lease while its sessions to the destination
are in use or idle (a lease per connection, not per message), renewing it while it lasts.
Suspensions and slow-downs set by other processes are seen within `FRESH` seconds.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

import redis.asyncio as aioredis
import structlog

from relay.clock import Clock
from relay.delivery.shaping import Reaction, ShapingRule
from relay.errors import StoreUnavailable
from relay.redis_client import load_script, store_errors

__all__ = ["Admission", "FleetGate", "Reservation", "Shaper"]

log = structlog.get_logger("relay.delivery")

_PREFIX = "shape:{"

BATCH_SPAN = 0.1
"""Seconds of consecutive send times one Redis call may reserve for a process."""
MAX_BATCH = 100
LATE = 0.01
"""A send time may be used this late at most (or one step, when longer): below that, the
event loop's own jitter. Rates up to 100/s per IP stay exact; above, a window of one period
may hold up to 10 ms worth of messages more (1 % of a per-second rate)."""
MAX_LOCAL = 10_000
FRESH = 0.5
"""A process asks Redis at least this often per destination and IP (suspensions, slow-downs
set elsewhere are seen within it)."""

_BUSY_FIRST = 0.02
_BUSY_MAX = 0.5
"""A connection slot freed by another process is seen within this long."""
_BUSY_RETRY = 1.0
"""A job whose rule stayed at its connection limit for the whole wait comes back this soon."""

Verdict = Literal["admitted", "suspended", "busy", "later"]
_VERDICTS: tuple[Verdict, ...] = ("admitted", "suspended", "busy", "later")


@dataclass(frozen=True)
class Reservation:
    """What one call of the gate script gave."""

    verdict: Verdict
    at: float
    """admitted: the first send time; suspended: until when; later: the next free time."""
    step: float = 0.0
    """Seconds between the send times reserved (0: no rate applies)."""
    count: int = 0
    """Send times reserved: at, at + step, ..."""
    token: str = ""
    """The connection lease taken ("" when none was asked)."""


@dataclass(frozen=True)
class Admission:
    verdict: Verdict
    at: float
    """admitted: when it was sent on its way; otherwise when to try again."""


class FleetGate:
    """The Redis side: one script call per reservation, a pipeline per renewal/release."""

    def __init__(self, redis: aioredis.Redis, *, lease: float) -> None:
        """`lease`: how long a connection lease lasts unless renewed (a process that dies
        frees its connections after this long)."""
        self._redis = redis
        self.lease = lease
        self._lease_ms = max(1, int(lease * 1000))
        self._script = load_script(redis, __file__, "shaping_gate.lua")

    async def reserve(
        self,
        rule: ShapingRule,
        scope: str,
        ip: str,
        now: float,
        max_wait: float,
        *,
        times: int = 1,
        connection: bool = False,
    ) -> Reservation:
        """Up to `times` send times (at most BATCH_SPAN of them) and, with `connection`, a
        connection lease. `scope`: what the limits count (`rule.scope(domain)`)."""
        token = secrets.token_hex(8) if connection else ""
        base = _base(scope)
        keys = [
            f"{base}:conns",
            f"{base}:conns:{ip}",
            f"{base}:suspend:{ip}",
            f"{base}:slow:{ip}",
            f"{base}:slow-tat:{ip}",
            *(f"{base}:tat:{ip}:{rate}" for rate in rule.rates),
        ]
        args: list[str | int] = [
            int(now * 1000),
            token,
            self._lease_ms,
            rule.max_connections or 0,
            rule.max_connections_per_ip or 0,
            int(max_wait * 1000),
            times,
            int(BATCH_SPAN * 1000),
            *(_interval_ms(rate.count, rate.period.seconds) for rate in rule.rates),
        ]
        with store_errors():
            reply = await self._script(keys=keys, args=args)
        verdict = _VERDICTS[int(reply[0])]
        if verdict != "admitted":
            return Reservation(verdict, int(reply[1]) / 1000)
        step, count = int(reply[2]) / 1000, int(reply[3])
        return Reservation(verdict, int(reply[1]) / 1000, step, count, token)

    async def release(self, scope: str, ip: str, tokens: list[str]) -> None:
        if not tokens:
            return
        base = _base(scope)
        with store_errors():
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.zrem(f"{base}:conns", *tokens)
                pipe.zrem(f"{base}:conns:{ip}", *tokens)
                await pipe.execute()

    async def renew(self, scope: str, ip: str, tokens: list[str], now: float) -> None:
        """Extend leases still held (only those: a lease that ended is not revived)."""
        if not tokens:
            return
        base = _base(scope)
        end = int(now * 1000) + self._lease_ms
        with store_errors():
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in (f"{base}:conns", f"{base}:conns:{ip}"):
                    pipe.zadd(key, dict.fromkeys(tokens, end), xx=True)
                    pipe.pexpire(key, self._lease_ms)
                await pipe.execute()

    async def react(self, scope: str, ip: str, reaction: Reaction, now: float) -> float:
        """Apply a reaction for the whole fleet; returns when it ends."""
        base = _base(scope)
        ms = max(1, int(reaction.duration.seconds * 1000))
        until = now + reaction.duration.seconds
        with store_errors():
            if reaction.action == "slow":
                assert reaction.rate is not None
                interval = _interval_ms(reaction.rate.count, reaction.rate.period.seconds)
                await self._redis.set(f"{base}:slow:{ip}", interval, px=ms)
            else:
                await self._redis.set(f"{base}:suspend:{ip}", int(until * 1000), px=ms)
        return until

    async def suspended(self, scope: str, ips: list[str], now: float) -> dict[str, float]:
        """The IPs suspended for the scope, with when each suspension ends."""
        if not ips:
            return {}
        base = _base(scope)
        with store_errors():
            values = await self._redis.mget([f"{base}:suspend:{ip}" for ip in ips])
        found = {}
        for ip, value in zip(ips, values, strict=True):
            if value is not None and int(value) / 1000 > now:
                found[ip] = int(value) / 1000
        return found


@dataclass
class _Local:
    """This process's share of one scope × egress IP."""

    times: deque[float] = field(default_factory=deque)
    step: float = 0.0
    paced: bool = True
    """A rate applied at the last reservation (the rule's, or a slow-down's)."""
    tokens: list[str] = field(default_factory=list)
    in_use: int = 0
    checked: float = float("-inf")
    renewed: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    idle: asyncio.TimerHandle | None = None
    recent: deque[float] = field(default_factory=deque)
    """Loop times of this process's last messages (how many send times to reserve)."""


class Shaper:
    """What a delivery worker asks before each message: the fleet gate, waited on.

    A send time is slept until (the workers of one destination go in the order they got
    their times); a connection limit is polled with backoff for at most `max_wait`. Redis
    unreachable: the message goes (shaping is advice; the queue's state is the gate).
    """

    def __init__(
        self, gate: FleetGate | None, clock: Clock, max_wait: float, max_local: int = MAX_LOCAL
    ) -> None:
        self._gate = gate
        self._max_local = max_local
        self._clock = clock
        self._max_wait = max_wait
        self._local: dict[tuple[str, str], _Local] = {}
        self._returning: set[asyncio.Task[None]] = set()

    async def admit(self, rule: ShapingRule, scope: str, ip: str) -> Admission | None:
        """None or "admitted": send now (any wait is over; then call `release`); otherwise
        the job should wait until `at`."""
        if self._gate is None or not rule.gated:
            return None
        loop = asyncio.get_running_loop()
        local = self._local.get((scope, ip))
        if local is None:
            self._forget_idle()
            local = self._local[(scope, ip)] = _Local()
        limited = bool(rule.max_connections or rule.max_connections_per_ip)
        deadline = loop.time() + self._max_wait
        delay = _BUSY_FIRST
        while True:
            now = self._clock.now()
            async with local.lock:
                result = await self._refill(rule, scope, ip, local, limited, now, deadline)
                if result is None:  # Redis unreachable: go
                    return None
                if result.verdict == "admitted":
                    local.recent.append(loop.time())
                    if len(local.recent) > MAX_BATCH:
                        local.recent.popleft()
                    if limited:
                        local.in_use += 1
                        if local.idle is not None:
                            local.idle.cancel()
                            local.idle = None
                    at = local.times.popleft() if local.paced and local.times else now
                    break
            if result.verdict == "busy" and loop.time() + delay < deadline:
                await asyncio.sleep(delay)
                delay = min(_BUSY_MAX, delay * 2)
                continue
            if result.verdict == "busy":
                return Admission("busy", now + _BUSY_RETRY)
            return Admission(result.verdict, result.at)
        if at > now:
            await asyncio.sleep(at - now)
        return Admission("admitted", at)

    def _forget_idle(self) -> None:
        """Keep the map bounded (the `*` rule counts each destination domain apart): past
        `max_local` entries, those holding nothing are dropped, oldest first."""
        if len(self._local) < self._max_local:
            return
        for key in list(self._local)[: len(self._local) // 2]:
            local = self._local[key]
            if not (local.in_use or local.tokens or local.lock.locked()):
                del self._local[key]

    async def _refill(
        self,
        rule: ShapingRule,
        scope: str,
        ip: str,
        local: _Local,
        limited: bool,
        now: float,
        deadline: float,
    ) -> Reservation | None:
        """Ask Redis when this process has no send time or connection left for the message,
        or has not asked for FRESH seconds; else admit from what it holds."""
        assert self._gate is not None
        loop = asyncio.get_running_loop()
        while local.times and local.times[0] + max(local.step, LATE) <= now:
            local.times.popleft()  # its moment passed unused: never sent late in a bunch
        need_connection = limited and local.in_use >= len(local.tokens)
        need_times = local.paced and not local.times
        stale = loop.time() - local.checked > FRESH
        if not (need_connection or need_times or stale):
            await self._renew(scope, ip, local, now)
            return Reservation("admitted", now)
        wanted = _batch(rule, local, loop.time()) if (need_times or stale) else 0
        try:
            got = await self._gate.reserve(
                rule,
                scope,
                ip,
                now,
                max(0.0, deadline - loop.time()),
                times=wanted,
                connection=need_connection,
            )
        except StoreUnavailable as exc:
            log.error("shaping.unavailable", rule=scope, error=str(exc))
            return None
        local.checked = loop.time()
        if got.verdict == "suspended":
            local.times.clear()
        if got.verdict != "admitted":
            return got
        if got.token:
            local.tokens.append(got.token)
            local.renewed = loop.time()
        if wanted:
            local.paced, local.step = got.count > 0, got.step
            local.times.extend(got.at + n * got.step for n in range(got.count))
        await self._renew(scope, ip, local, now)
        return got

    async def _renew(self, scope: str, ip: str, local: _Local, now: float) -> None:
        assert self._gate is not None
        loop = asyncio.get_running_loop()
        if local.tokens and loop.time() - local.renewed > self._gate.lease / 3:
            local.renewed = loop.time()
            try:
                await self._gate.renew(scope, ip, list(local.tokens), now)
            except StoreUnavailable as exc:
                log.warning("shaping.renew_failed", rule=scope, error=str(exc))

    def release(self, rule: ShapingRule, scope: str, ip: str, admission: Admission | None) -> None:
        """The message is sent: its connection is idle. Leases with no session in use are
        given back after the rule's idle timeout (as idle sessions are closed)."""
        if admission is None or not (rule.max_connections or rule.max_connections_per_ip):
            return
        local = self._local.get((scope, ip))
        if local is None or local.in_use <= 0:
            return
        local.in_use -= 1
        if local.in_use == 0 and local.tokens:
            loop = asyncio.get_running_loop()
            local.idle = loop.call_later(
                max(0.0, rule.idle_timeout.seconds), self._give_back, scope, ip
            )

    def _give_back(self, scope: str, ip: str) -> None:
        local = self._local.get((scope, ip))
        if local is None or local.in_use or not local.tokens or self._gate is None:
            return
        tokens, local.tokens, local.idle = local.tokens, [], None
        task = asyncio.get_running_loop().create_task(self._release(scope, ip, tokens))
        self._returning.add(task)
        task.add_done_callback(self._returning.discard)

    async def _release(self, scope: str, ip: str, tokens: list[str]) -> None:
        assert self._gate is not None
        try:
            await self._gate.release(scope, ip, tokens)
        except StoreUnavailable as exc:  # the leases end by themselves
            log.warning("shaping.release_failed", rule=scope, error=str(exc))

    async def close(self) -> None:
        """Give every connection lease back (on stop)."""
        for (scope, ip), local in self._local.items():
            if local.idle is not None:
                local.idle.cancel()
            if local.tokens and self._gate is not None:
                tokens, local.tokens = local.tokens, []
                await self._release(scope, ip, tokens)
        if self._returning:
            await asyncio.gather(*self._returning, return_exceptions=True)

    async def react(self, scope: str, ip: str, reaction: Reaction) -> None:
        if self._gate is None:
            return
        local = self._local.get((scope, ip))
        if local is not None:  # its next message asks Redis (and finds the reaction)
            local.times.clear()
            local.checked = float("-inf")
        try:
            until = await self._gate.react(scope, ip, reaction, self._clock.now())
        except StoreUnavailable as exc:
            log.error("shaping.unavailable", rule=scope, error=str(exc))
            return
        log.warning(
            "shaping.reaction",
            rule=scope,
            egress_ip=ip,
            action=reaction.action,
            until=until,
            reaction=str(reaction),
        )


def _batch(rule: ShapingRule, local: _Local, now: float) -> int:
    """Send times to reserve at once: as many as this process sent in the last BATCH_SPAN,
    plus one (times it would not use are capacity the other processes lose), at most
    BATCH_SPAN of the rule's strictest rate."""
    recent = local.recent
    while recent and recent[0] < now - BATCH_SPAN:
        recent.popleft()
    if not rule.rates:
        return 1
    step = max(rate.period.seconds / rate.count for rate in rule.rates)
    return max(1, min(MAX_BATCH, int(BATCH_SPAN / step), len(recent) + 1))


def _base(scope: str) -> str:
    return f"{_PREFIX}{scope}}}"


def _interval_ms(count: int, seconds: float) -> int:
    return max(1, round(seconds * 1000 / count))
