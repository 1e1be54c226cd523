"""Counts for `relay report content` and the malware window of each account, in Redis.

  content:viruses         hash: "SIGNATURE\\tLOGIN" -> messages
  content:spam            hash: "LOGIN\\tACTION" -> messages (quarantine, reject, allowed)
  content:failures        hash: "SCANNER\\tWHAT" -> scans without a verdict (timeout, error)
  content:hits:LOGIN      zset: malware hits of the account (time -> time), for suspension

Clean mail is not counted here (it would cost a round trip per message).
"""

from __future__ import annotations

import secrets
from typing import Any

import redis.asyncio as aioredis

from relay.redis_client import store_errors, text

__all__ = ["ContentStats"]

_VIRUSES, _SPAM, _FAILURES = "content:viruses", "content:spam", "content:failures"


def _hits(login: str) -> str:
    return f"content:hits:{login}"


class ContentStats:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis

    async def malware(self, account: str, signature: str, now: float, window: float) -> int:
        """Count one malware message; the account's hits within `window` (this one included)."""
        with store_errors():
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hincrby(_VIRUSES, f"{signature}\t{account}", 1)
                pipe.zadd(_hits(account), {f"{now!r}:{secrets.token_hex(3)}": now})
                pipe.zremrangebyscore(_hits(account), "-inf", now - window)
                pipe.zcard(_hits(account))
                pipe.expire(_hits(account), max(1, int(window) + 60))
                result = await pipe.execute()
        return int(result[3])

    async def spam(self, account: str, action: str) -> None:
        with store_errors():
            await self._redis.hincrby(_SPAM, f"{account}\t{action}", 1)

    async def failure(self, scanner: str, what: str) -> None:
        with store_errors():
            await self._redis.hincrby(_FAILURES, f"{scanner}\t{what}", 1)

    async def counts(self) -> dict[str, Any]:
        """Viruses by signature and by account, spam verdicts by account, scanner failures."""
        with store_errors():
            viruses = await self._redis.hgetall(_VIRUSES)
            spam = await self._redis.hgetall(_SPAM)
            failures = await self._redis.hgetall(_FAILURES)
        by_signature: dict[str, dict[str, int]] = {}
        for key, count in viruses.items():
            signature, _, account = text(key).partition("\t")
            by_signature.setdefault(signature, {})[account] = int(count)
        by_account: dict[str, dict[str, int]] = {}
        for key, count in spam.items():
            account, _, action = text(key).partition("\t")
            by_account.setdefault(account, {})[action] = int(count)
        scanner_failures: dict[str, dict[str, int]] = {}
        for key, count in failures.items():
            scanner, _, what = text(key).partition("\t")
            scanner_failures.setdefault(scanner, {})[what] = int(count)
        return {
            "viruses": {
                sig: {"total": sum(accts.values()), "accounts": accts}
                for sig, accts in sorted(by_signature.items())
            },
            "spam": dict(sorted(by_account.items())),
            "scanner_failures": scanner_failures,
        }
