"""Who sent what, for attributing a listing: per egress IP and account, per sender domain.

traffic:{IP}:HOUR   hash: account -> messages delivered from IP in that hour (8 days)
seen:domains        zset: sender domain -> last seen (envelope and From:)
seen:{DOMAIN}       zset: account -> last seen with that sender domain
"""

from __future__ import annotations

from collections import Counter

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from relay.redis_client import store_errors, text

__all__ = ["TrafficLog"]

_KEEP = 8 * 86400
_DOMAINS = "seen:domains"


def _hour_key(ip: str, hour: int) -> str:
    return f"traffic:{{{ip}}}:{hour}"


class TrafficLog:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis

    async def record_delivery(self, ip: str, account: str, now: float, messages: int = 1) -> None:
        with store_errors():
            async with self._redis.pipeline(transaction=False) as pipe:
                self.stage_delivery(pipe, ip, account, now, messages)
                await pipe.execute()

    @staticmethod
    def stage_delivery(pipe: Pipeline, ip: str, account: str, now: float, messages: int) -> None:
        """`record_delivery`, added to a pipeline (sent with the end of the delivery)."""
        key = _hour_key(ip, int(now // 3600))
        pipe.hincrby(key, account, messages)
        pipe.expire(key, _KEEP)

    async def by_account(self, ip: str, now: float, window: float) -> dict[str, int]:
        """Messages per account from `ip` in the hours overlapping [now - window, now]."""
        last = int(now // 3600)
        first = int((now - window) // 3600)
        totals: Counter[str] = Counter()
        with store_errors():
            async with self._redis.pipeline(transaction=False) as pipe:
                for hour in range(first, last + 1):
                    pipe.hgetall(_hour_key(ip, hour))
                for raw in await pipe.execute():
                    for account, n in raw.items():
                        totals[text(account)] += int(n)
        return dict(totals)

    async def record_senders(self, account: str, domains: list[str], now: float) -> None:
        if not domains:
            return
        with store_errors():
            async with self._redis.pipeline(transaction=False) as pipe:  # one round trip
                pipe.zadd(_DOMAINS, dict.fromkeys(domains, now))
                for domain in domains:
                    pipe.zadd(f"seen:{{{domain}}}", {account: now})
                await pipe.execute()

    async def sender_domains(self, since: float) -> list[str]:
        with store_errors():
            await self._redis.zremrangebyscore(_DOMAINS, "-inf", since)
            return [text(d) for d in await self._redis.zrangebyscore(_DOMAINS, since, "+inf")]

    async def accounts_using(self, domain: str, since: float) -> list[str]:
        key = f"seen:{{{domain}}}"
        with store_errors():
            await self._redis.zremrangebyscore(key, "-inf", since)
            return [text(a) for a in await self._redis.zrangebyscore(key, since, "+inf")]
