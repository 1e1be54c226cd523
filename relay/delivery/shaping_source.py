"""The shaping rules in force in this process, replaced whole on reload.

SIGHUP reloads one process (a supervisor passes it to its children); `relay reload` bumps a
generation number in Redis that every process of every node checks at its next poll, so
one command reloads the fleet. A file that does not validate is refused with its error
logged, and the rules in force stay.
"""

from __future__ import annotations

from pathlib import Path

import redis.asyncio as aioredis
import structlog

from relay.config import DeliverySettings
from relay.delivery.shaping import Shaping, load_shaping
from relay.errors import ConfigError, StoreUnavailable
from relay.redis_client import store_errors

__all__ = ["GENERATION_KEY", "ShapingSource", "request_reload"]

GENERATION_KEY = "relay:shaping:generation"

log = structlog.get_logger("relay.delivery")


class ShapingSource:
    def __init__(self, delivery: DeliverySettings, redis: aioredis.Redis | None = None) -> None:
        """Loads the file now: a relay does not start with rules that do not validate."""
        self._path: Path | None = delivery.shaping
        self._delivery = delivery
        self._redis = redis
        self._generation: bytes | str | None = None
        self._checked = False
        self.current: Shaping = load_shaping(self._path, delivery)

    def reload(self) -> bool:
        """Read the file again; False (and the old rules kept) when it does not validate."""
        try:
            fresh = load_shaping(self._path, self._delivery)
        except ConfigError as exc:
            log.error("shaping.reload_refused", error=str(exc))
            return False
        self.current = fresh
        log.info("shaping.reloaded", source=fresh.source, rules=len(fresh.rules))
        return True

    async def check(self) -> None:
        """Reload when `relay reload` was run since the last check (cheap: one GET)."""
        if self._redis is None:
            return
        try:
            with store_errors():
                generation = await self._redis.get(GENERATION_KEY)
        except StoreUnavailable:
            return
        if self._checked and generation != self._generation:
            self.reload()
        self._generation, self._checked = generation, True


async def request_reload(redis: aioredis.Redis) -> int:
    """Every relay process reloads its shaping file at its next poll; the new generation."""
    with store_errors():
        return int(await redis.incr(GENERATION_KEY))
