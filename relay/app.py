"""`relay run`: Redis (embedded or not), the submission listeners and the delivery workers."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator

import dns.resolver
import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from quota import QuotaStore
from relay.abuse.complaints import TraceStore
from relay.abuse.content import ContentGuard
from relay.abuse.factory import dnsbl_client, suspension_service
from relay.abuse.monitor import MonitorSettings, ReputationMonitor
from relay.abuse.traffic import TrafficLog
from relay.accounts import AccountStore
from relay.accounts.hashing import HashAdmission, HashingQueue, default_threads
from relay.clock import Clock, SystemClock
from relay.config import AuthGuardSettings, Settings
from relay.delivery.egress_state import egress_state
from relay.delivery.mx import make_resolver
from relay.delivery.worker import DeliveryWorker
from relay.embedded_redis import EmbeddedRedis
from relay.errors import StoreUnavailable
from relay.queue import QueueStore
from relay.redis_client import connect
from relay.sender_auth import DkimKeyStore, DkimSigner, SpfChecker
from relay.sender_auth.spf import install_resolver
from relay.submission.guard import AuthGuard, AuthPolicy
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


def hashing_queue(guard: AuthGuardSettings) -> HashingQueue:
    """The bounded queue of the submission listeners' password checks."""
    return HashingQueue(
        HashAdmission(
            threads=default_threads(), queue=guard.hash_queue, known_queue=guard.hash_queue_known
        )
    )


def spf_checker(settings: Settings, clock: Clock) -> SpfChecker | None:
    if settings.sender_auth.spf == "off":
        return None
    install_resolver(make_resolver(settings.dns, dns.resolver.Resolver))
    return SpfChecker(
        [e.ip for e in settings.delivery.egress],
        helo=settings.hostname,
        timeout=settings.sender_auth.spf_timeout.seconds,
        clock=clock.now,
    )


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
            egress_state=egress_state(redis, clock, settings.delivery),
            hostname=settings.hostname,
            on_delivered=TrafficLog(redis).record_delivery,
        )
        quota = quota_store(redis, settings)
        suspensions = suspension_service(redis, settings, clock, quota)
        dnsbl = dnsbl_client(settings, clock)
        traffic = TrafficLog(redis)
        guard = ContentGuard(
            dnsbl=dnsbl,
            suspensions=suspensions,
            traffic=traffic,
            clock=clock,
            deadline=settings.reputation.data_check_deadline.seconds,
        )
        service = SubmissionService(
            accounts=AccountStore(
                redis, clock, hashing=hashing_queue(settings.submission.auth_guard)
            ),
            queue=queue,
            quota=quota,
            content_check=guard.check if settings.reputation.data_check else None,
            trace=TraceStore(redis).remember,
            spf=spf_checker(settings, clock),
            spf_mode=settings.sender_auth.spf,
            dkim=DkimSigner(DkimKeyStore(redis), clock=clock.now)
            if settings.sender_auth.dkim
            else None,
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
            guard=AuthGuard(
                redis,
                AuthPolicy.from_settings(settings.submission.auth_guard),
                clock,
                settings.redis.timeout.seconds,
            ),
        )
        delivering = (
            asyncio.create_task(worker.run(stop)) if settings.delivery.workers > 0 else None
        )
        monitor = ReputationMonitor(
            dnsbl=dnsbl,
            egress=settings.delivery.egress,
            egress_state=egress_state(redis, clock, settings.delivery),
            traffic=traffic,
            suspensions=suspensions,
            notifier=suspensions.notifier,
            clock=clock,
            settings=MonitorSettings(
                interval=settings.reputation.monitor_interval.seconds,
                window=settings.reputation.attribution_window.seconds,
                attribution=settings.reputation.attribution,
                min_share=settings.reputation.attribution_share,
            ),
        )
        monitoring = asyncio.create_task(monitor.run(stop)) if dnsbl.zones else None
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
        for task in (delivering, monitoring):
            if task is not None:
                await task
        for server in servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)


def install_stop_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
