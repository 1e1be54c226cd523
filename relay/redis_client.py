"""The Redis client the whole relay shares, and loading of the Lua scripts beside the code."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from relay.errors import StoreUnavailable

__all__ = ["connect", "load_script", "store_errors", "text", "text_dict"]


def connect(url: str, *, timeout: float, max_connections: int = 64) -> aioredis.Redis:
    """A bounded pool that waits for a free connection instead of raising when exhausted."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
    )
    return aioredis.Redis.from_pool(pool)  # the client owns (and closes) its pool


def load_script(redis: aioredis.Redis, beside: str, name: str) -> AsyncScript:
    """Register `name` (a .lua file in the folder of module file `beside`)."""
    source = (Path(beside).parent / name).read_text(encoding="utf-8")
    return redis.register_script(source)


def text(value: object) -> str:
    """A Redis reply (bytes: the client does not decode, bodies are binary) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def text_dict(raw: object) -> dict[str, str]:
    assert isinstance(raw, dict)
    return {text(k): text(v) for k, v in raw.items()}


@contextlib.contextmanager
def store_errors() -> Iterator[None]:
    """Redis errors inside become StoreUnavailable: callers handle one error of ours."""
    try:
        yield
    except RedisError as exc:
        raise StoreUnavailable(f"redis: {exc}") from None
