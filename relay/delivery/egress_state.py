"""The shared state of the egress IPs in Redis: disabled, listed, cooling down per domain.

Several relay processes share it, and it survives restarts. Keys share the hash tag
`{egress}` (one Cluster slot):
  {egress}:disabled      hash: ip -> JSON {reason, at}      (an operator took it out)
  {egress}:listed        hash: ip -> JSON {evidence, at}    (a blocklist lists it)
  {egress}:cool:DOMAIN   hash: ip -> end of the cool-down    (expires with the last one)
  {egress}:fails:DOMAIN  hash: ip -> recent connection failures (expires after a cool-down)
  {egress}:cooling       zset: "ip domain" -> end of the cool-down (for listings)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis

from relay.clock import Clock
from relay.config import DeliverySettings, Egress
from relay.delivery.egress import EgressStatus
from relay.redis_client import load_script, store_errors, text

__all__ = ["EgressState", "IpReport", "egress_state"]

_DISABLED = "{egress}:disabled"
_LISTED = "{egress}:listed"
_COOLING = "{egress}:cooling"


def _cool_key(domain: str) -> str:
    return f"{{egress}}:cool:{domain}"


def _fails_key(domain: str) -> str:
    return f"{{egress}}:fails:{domain}"


@dataclass(frozen=True)
class IpReport:
    """One IP as `relay ip list` shows it."""

    ip: str
    helo: str | None
    """None: not in the configured pool (state left from an earlier config)."""
    disabled: tuple[str, float] | None
    """(reason, since)."""
    listed: tuple[str, float] | None
    """(evidence, since)."""
    cooling: tuple[tuple[str, float], ...]
    """(domain, until) of each cool-down in force."""

    @property
    def state(self) -> str:
        if self.disabled is not None:
            return "disabled"
        if self.listed is not None:
            return "listed"
        return "cooling" if self.cooling else "healthy"

    def as_dict(self) -> dict[str, object]:
        return {
            "ip": self.ip,
            "helo": self.helo,
            "state": self.state,
            "disabled": (
                {"reason": self.disabled[0], "since": self.disabled[1]} if self.disabled else None
            ),
            "listed": (
                {"evidence": self.listed[0], "since": self.listed[1]} if self.listed else None
            ),
            "cooling": [{"domain": d, "until": u} for d, u in self.cooling],
        }


class EgressState:
    def __init__(
        self, redis: aioredis.Redis, clock: Clock, *, cooldown: float, cooldown_after: int
    ) -> None:
        self._redis = redis
        self._clock = clock
        self._cooldown = cooldown
        self._cooldown_after = cooldown_after
        self._cool = load_script(redis, __file__, "egress_cool.lua")

    async def snapshot(self, domain: str) -> EgressStatus:
        """What one delivery to `domain` needs to know, in one round trip."""
        with store_errors():
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hgetall(_DISABLED)
                pipe.hgetall(_LISTED)
                pipe.hgetall(_cool_key(domain))
                pipe.hgetall(_fails_key(domain))
                disabled, listed, cooling, fails = await pipe.execute()
        now = self._clock.now()
        return EgressStatus(
            disabled={text(ip): _field(raw, "reason") for ip, raw in disabled.items()},
            listed={text(ip): _field(raw, "evidence") for ip, raw in listed.items()},
            cooling={text(ip): float(until) for ip, until in cooling.items() if float(until) > now},
            failures={text(ip): int(count) for ip, count in fails.items()},
        )

    # --- what deliveries report ---

    async def record_block(self, ip: str, domain: str) -> float:
        """The destination refused this IP (a block-like reply): it cools down at once."""
        until = await self._record("block", ip, domain)
        assert until is not None
        return until

    async def record_failure(self, ip: str, domain: str) -> float | None:
        """This IP could not connect where another could; cools down after `cooldown_after`.

        Returns the end of the cool-down when this failure started one.
        """
        return await self._record("failure", ip, domain)

    async def record_success(self, ip: str, domain: str) -> None:
        """Forget the IP's past connection failures to the domain."""
        with store_errors():
            await self._redis.hdel(_fails_key(domain), ip)

    async def _record(self, kind: str, ip: str, domain: str) -> float | None:
        now = self._clock.now()
        with store_errors():
            until = await self._cool(
                keys=[_cool_key(domain), _fails_key(domain), _COOLING],
                args=[
                    kind,
                    ip,
                    f"{ip} {domain}",
                    repr(now),
                    repr(now + self._cooldown),
                    self._cooldown_after,
                    int(self._cooldown * 1000) + 1,
                ],
            )
        return float(until) if until else None

    # --- operators, and the reputation monitor (issue 6) ---

    async def disable(self, ip: str, reason: str) -> None:
        """Take the IP out of rotation until `enable`."""
        await self._set(_DISABLED, ip, {"reason": reason, "at": self._clock.now()})

    async def enable(self, ip: str) -> bool:
        """Back into rotation: clears the operator's disable and every cool-down of the IP.

        A listing stays (the reputation monitor clears it). False: it was not disabled.
        """
        with store_errors():
            members = [
                text(m)
                for m in await self._redis.zrange(_COOLING, 0, -1)
                if text(m).split(" ", 1)[0] == ip
            ]
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hdel(_DISABLED, ip)
                for member in members:
                    pipe.hdel(_cool_key(member.split(" ", 1)[1]), ip)
                    pipe.hdel(_fails_key(member.split(" ", 1)[1]), ip)
                    pipe.zrem(_COOLING, member)
                results = await pipe.execute()
        return bool(results[0])

    async def set_listed(self, ip: str, evidence: str) -> None:
        """Out of rotation because a blocklist lists it; `evidence` says which and how."""
        await self._set(_LISTED, ip, {"evidence": evidence, "at": self._clock.now()})

    async def clear_listed(self, ip: str) -> bool:
        """The IP is delisted: back into rotation (unless disabled). False: was not listed."""
        with store_errors():
            return bool(await self._redis.hdel(_LISTED, ip))

    async def describe(self, pool: Sequence[Egress]) -> list[IpReport]:
        """Every configured IP, then any other IP that has state, in that order."""
        now = self._clock.now()
        with store_errors():
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.zremrangebyscore(_COOLING, "-inf", now)
                pipe.hgetall(_DISABLED)
                pipe.hgetall(_LISTED)
                pipe.zrange(_COOLING, 0, -1, withscores=True)
                _, disabled, listed, cooling = await pipe.execute()
        disabled = {text(k): json.loads(text(v)) for k, v in disabled.items()}
        listed = {text(k): json.loads(text(v)) for k, v in listed.items()}
        cools: dict[str, list[tuple[str, float]]] = {}
        for member, until in cooling:
            ip, _, domain = text(member).partition(" ")
            cools.setdefault(ip, []).append((domain, float(until)))
        helos = {e.ip: e.helo for e in pool}
        ips = [e.ip for e in pool]
        ips += sorted((set(disabled) | set(listed) | set(cools)) - set(ips))
        return [
            IpReport(
                ip=ip,
                helo=helos.get(ip),
                disabled=(disabled[ip]["reason"], disabled[ip]["at"]) if ip in disabled else None,
                listed=(listed[ip]["evidence"], listed[ip]["at"]) if ip in listed else None,
                cooling=tuple(sorted(cools.get(ip, []))),
            )
            for ip in ips
        ]

    async def _set(self, key: str, ip: str, value: dict[str, object]) -> None:
        with store_errors():
            await self._redis.hset(key, ip, json.dumps(value))


def _field(raw: object, name: str) -> str:
    try:
        return str(json.loads(text(raw)).get(name, ""))
    except (ValueError, AttributeError):
        return text(raw)


def egress_state(redis: aioredis.Redis, clock: Clock, delivery: DeliverySettings) -> EgressState:
    return EgressState(
        redis,
        clock,
        cooldown=delivery.cooldown.seconds,
        cooldown_after=delivery.cooldown_after,
    )
