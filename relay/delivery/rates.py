"""The fleet-wide gate of the shaping rules, in Redis: one script call per message.

Every process of every node asks the same keys, so two processes never exceed one rule
together: a rule's rate per egress IP is paced (GCRA without burst) and a reservation is a
time to send at, which the worker sleeps until; its connection limits are leases that end
by themselves when a process dies; a reaction to a provider's reply suspends an IP for the
rule, or slows it down, for every process at once.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from typing import Literal

import redis.asyncio as aioredis
import structlog

from relay.clock import Clock
from relay.delivery.shaping import Reaction, ShapingRule
from relay.errors import StoreUnavailable
from relay.redis_client import load_script, store_errors

log = structlog.get_logger("relay.delivery")

_BUSY_FIRST = 0.02
_BUSY_MAX = 0.5
"""A connection slot freed by another process is seen within this long."""
_BUSY_RETRY = 1.0
"""A job whose rule stayed at its connection limit for the whole wait comes back this soon."""

__all__ = ["Admission", "FleetGate", "Shaper"]

_PREFIX = "shape:{"

Verdict = Literal["admitted", "suspended", "busy", "later"]
_VERDICTS: tuple[Verdict, ...] = ("admitted", "suspended", "busy", "later")


@dataclass(frozen=True)
class Admission:
    verdict: Verdict
    at: float
    """admitted: when to send; suspended: until when; later: the next free time."""
    token: str = ""
    """Names the connection lease to give back (admitted with connection limits)."""


class FleetGate:
    def __init__(self, redis: aioredis.Redis, *, lease: float) -> None:
        """`lease`: how long a connection slot is held at most (a process that dies while
        sending frees its slots after this long)."""
        self._redis = redis
        self._lease_ms = max(1, int(lease * 1000))
        self._script = load_script(redis, __file__, "shaping_gate.lua")

    async def admit(
        self, rule: ShapingRule, scope: str, ip: str, now: float, max_wait: float
    ) -> Admission:
        """`scope`: what the limits count (`rule.scope(domain)`)."""
        token = secrets.token_hex(8)
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
            *(_interval_ms(rate.count, rate.period.seconds) for rate in rule.rates),
        ]
        with store_errors():
            verdict, at = await self._script(keys=keys, args=args)
        held = token if rule.max_connections or rule.max_connections_per_ip else ""
        return Admission(_VERDICTS[int(verdict)], int(at) / 1000, held)

    async def release(self, scope: str, ip: str, token: str) -> None:
        if not token:
            return
        base = _base(scope)
        with store_errors():
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.zrem(f"{base}:conns", token)
                pipe.zrem(f"{base}:conns:{ip}", token)
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


def _base(rule: str) -> str:
    return f"{_PREFIX}{rule}}}"


def _interval_ms(count: int, seconds: float) -> int:
    return max(1, round(seconds * 1000 / count))


class Shaper:
    """What a delivery worker asks before each message: the fleet gate, waited on.

    A rate reservation is slept until (the workers of one destination go in the order
    they asked); a connection limit is polled with backoff for at most `max_wait`. Redis
    unreachable: the message goes (shaping is advice; the queue's state is the gate).
    """

    def __init__(self, gate: FleetGate | None, clock: Clock, max_wait: float) -> None:
        self._gate = gate
        self._clock = clock
        self._max_wait = max_wait

    async def admit(self, rule: ShapingRule, scope: str, ip: str) -> Admission | None:
        """None or "admitted": send now (the wait is over); else the job should wait."""
        if self._gate is None or not rule.gated:
            return None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._max_wait
        delay = _BUSY_FIRST
        while True:
            now = self._clock.now()
            try:
                wait = max(0.0, deadline - loop.time())
                admission = await self._gate.admit(rule, scope, ip, now, wait)
            except StoreUnavailable as exc:
                log.error("shaping.unavailable", rule=rule.name, error=str(exc))
                return None
            if admission.verdict == "busy":
                if loop.time() + delay < deadline:
                    await asyncio.sleep(delay)
                    delay = min(_BUSY_MAX, delay * 2)
                    continue
                return Admission("busy", now + _BUSY_RETRY)
            if admission.verdict == "admitted" and admission.at > now:
                await asyncio.sleep(admission.at - now)
            return admission

    async def release(self, scope: str, ip: str, admission: Admission | None) -> None:
        if self._gate is None or admission is None or not admission.token:
            return
        try:
            await self._gate.release(scope, ip, admission.token)
        except StoreUnavailable as exc:  # the lease ends by itself
            log.warning("shaping.release_failed", rule=scope, error=str(exc))

    async def react(self, scope: str, ip: str, reaction: Reaction) -> None:
        if self._gate is None:
            return
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
