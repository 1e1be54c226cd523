"""`relay run`: Redis (embedded or not), the submission listeners and the delivery workers."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from quota import QuotaStore
from relay.accounts import AccountStore
from relay.clock import Clock, SystemClock
from relay.config import Settings
from relay.delivery.mx import make_resolver
from relay.delivery.worker import DeliveryWorker
from relay.embedded_redis import EmbeddedRedis
from relay.errors import StoreUnavailable
from relay.queue import QueueStore
from relay.redis_client import connect
from relay.submission.server import start_listeners
from relay.submission.service import SubmissionService
from relay.tls import ensure_self_signed, server_context

__all__ = ["open_redis", "quota_store", "serve"]

log = structlog.get_logger("relay")


def quota_store(redis: aioredis.Redis, settings: Settings) -> QuotaStore:
    return QuotaStore(
        redis,
        default_per_minute=settings.quota.per_minute.count,
        per_recipient=settings.quota.per_recipient.count,
    )


@contextlib.asynccontextmanager
async def open_redis(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    """The configured Redis; with an empty URL, the embedded one (started if not running)."""
    embedded = None
    url = settings.redis.url
    if not url:
        embedded = EmbeddedRedis(settings.redis.embedded_dir)
        if embedded.is_running():
            embedded = None  # another relay process owns it; share it
        else:
            await asyncio.to_thread(embedded.start)
            log.info("redis.embedded_started", dir=str(settings.redis.embedded_dir))
        url = EmbeddedRedis(settings.redis.embedded_dir).url
    client = connect(url, timeout=settings.redis.timeout.seconds)
    try:
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"cannot reach Redis at {settings.redis.url}: {exc}") from None
        yield client
    finally:
        await client.aclose()
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)


async def serve(settings: Settings, *, clock: Clock | None = None, stop: asyncio.Event) -> None:
    clock = clock or SystemClock()
    settings.tls.require_files()
    if settings.tls.self_signed and ensure_self_signed(
        settings.tls.cert, settings.tls.key, settings.hostname
    ):
        log.info("tls.self_signed_created", cert=str(settings.tls.cert))
    tls = server_context(settings.tls.cert, settings.tls.key)
    async with open_redis(settings) as redis:
        queue = QueueStore(redis, clock)
        worker = DeliveryWorker(
            queue=queue,
            settings=settings.delivery,
            resolver=make_resolver(settings.dns),
            clock=clock,
        )
        service = SubmissionService(
            accounts=AccountStore(redis, clock),
            queue=queue,
            quota=quota_store(redis, settings),
            settings=settings.submission,
            hostname=settings.hostname,
            clock=clock,
            store_timeout=settings.redis.timeout.seconds,
            on_queued=worker.wake,
        )
        servers = await start_listeners(
            listeners=settings.submission.listeners,
            settings=settings.submission,
            service=service,
            tls=tls,
            hostname=settings.hostname,
        )
        delivering = (
            asyncio.create_task(worker.run(stop)) if settings.delivery.workers > 0 else None
        )
        log.info(
            "relay.started",
            listeners=[f"{x.address} ({x.tls})" for x in settings.submission.listeners],
            workers=settings.delivery.workers,
            egress=[e.ip for e in settings.delivery.egress],
        )
        await stop.wait()
        log.info("relay.stopping")
        for server in servers:
            server.close()
        if delivering is not None:
            await delivering
        for server in servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)


def install_stop_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
