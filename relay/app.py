"""`relay run`: Redis (embedded or not), the submission listeners and the delivery workers."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import signal
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import dns.exception
import dns.resolver
import redis.asyncio as aioredis
import structlog
from dns.asyncresolver import Resolver as AsyncResolver
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
from relay.config import AuthGuardSettings, RedisSettings, Settings
from relay.content.factory import content_scanner, list_store, quarantine_desk
from relay.delivery.dane import DaneValidator, parse_anchors
from relay.delivery.dns_cache import DnsCache
from relay.delivery.egress_state import egress_state
from relay.delivery.mta_sts import MtaStsPolicies
from relay.delivery.mx import make_resolver
from relay.delivery.rates import FleetGate
from relay.delivery.shaping_source import ShapingSource
from relay.delivery.tls_policy import verifying_context
from relay.delivery.tls_report import TlsReports
from relay.delivery.worker import DeliveryWorker
from relay.embedded_redis import EmbeddedRedis
from relay.errors import ConfigError, StoreUnavailable
from relay.events import event_recorder, webhook_dispatcher
from relay.node.drain import DrainFlag
from relay.node.heartbeat import Heartbeat
from relay.node.limits import NodeConnectionLimits
from relay.node.parts import listening, run_parts
from relay.node.share import NodeShare, current
from relay.queue import QueueStore
from relay.redis_client import (
    connect_settings,
    describe,
    failure_text,
    insecure_settings,
    insecure_url,
    redact_url,
)
from relay.reports import ActivityLog
from relay.sender_auth import DkimKeyStore, DkimSigner, IdentityCache, IdentityStore, SpfChecker
from relay.sender_auth.spf import install_resolver
from relay.spool import InflightBudget
from relay.submission.guard import AuthGuard
from relay.submission.server import start_listeners
from relay.submission.service import SubmissionService
from relay.tls import ensure_self_signed, server_context

__all__ = ["open_redis", "quota_store", "serve", "warn_if_insecure"]

log = structlog.get_logger("relay")


def quota_store(redis: aioredis.Redis, settings: Settings) -> QuotaStore:
    return QuotaStore(
        redis,
        default_per_minute=settings.quota.per_minute.count,
        per_recipient=settings.quota.per_recipient.count,
    )


@contextlib.asynccontextmanager
async def open_redis(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    """The configured Redis (one server, a Cluster or a Sentinel-managed primary); with none
    configured, the embedded one (started if not running)."""
    embedded = None
    url = settings.redis.url
    if not url and not settings.redis.cluster_nodes and not settings.redis.sentinels:
        embedded = EmbeddedRedis(settings.redis.embedded_dir)
        if embedded.is_running():
            embedded = None  # another relay process owns it; share it
        else:
            await asyncio.to_thread(embedded.start)
            log.info("redis.embedded_started", dir=str(settings.redis.embedded_dir))
        url = EmbeddedRedis(settings.redis.embedded_dir).url
    client = connect_settings(settings.redis, url=url)
    try:
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            where = describe(settings.redis, url=url)
            reason = failure_text(exc, settings.redis)
            raise StoreUnavailable(f"cannot reach Redis at {where}: {reason}") from None
        yield client
    finally:
        await client.aclose()
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)


def give_back_large_blocks(threshold: int = 512 * 1024, keep: int = 4 << 20) -> None:
    """Blocks of `threshold` bytes and more come from mmap and go back to the system when
    freed. glibc's default raises that threshold as large blocks are freed (up to 32 MB), so
    a burst of big messages left the process holding its peak for good (2.6 GB seen).

    Above 256 KiB, not at it: every TLS read asks for a 256 KiB buffer (uvloop's and
    asyncio's SSL layers) and shrinks it to the few bytes read, which at a 256 KiB threshold
    cost an mmap, an mremap and a munmap (a TLB flush on every core the process's threads
    ran on) per TLS record: about 4% of the relay's CPU under load. `keep`: free memory at
    the top of the heap kept rather than given back at once (glibc's default, 128 KiB, gave
    those buffers back and took them again on every read)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, threshold)
        libc.mallopt(_M_TRIM_THRESHOLD, keep)


def collect_less(young: int = 5000) -> None:
    """The cyclic garbage collector, told what a long-running server looks like: what was
    made before serving (modules, classes, settings: hundreds of thousands of objects) is
    never garbage, so full collections leave it out (`gc.freeze`, before the supervisor
    forks, which also keeps those pages shared); and the youngest generation is collected
    every `young` allocations, not 700 (each collection walks every young object still
    alive, and under load that is every session's tasks and frames). Measured: the
    collector took about 3% of the relay's CPU under load. Garbage without cycles is freed
    at once as before; cycles wait for a few thousand more allocations."""
    gc.freeze()
    threshold, *older = gc.get_threshold()
    gc.set_threshold(max(threshold, young), *older)


_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def _checks_content(settings: Settings) -> bool:
    """The DATA check reads the message only when a domain list can judge it."""
    rep = settings.reputation
    return rep.data_check and any(zone.kind == "domain" for zone in rep.zones)


def delivery_dns_cache(settings: Settings, clock: Clock) -> DnsCache | None:
    """The process's delivery answer cache (`dns.cache_size`; 0: none)."""
    return DnsCache(clock, settings.dns.cache_size) if settings.dns.cache_size else None


def mta_sts_policies(
    settings: Settings, resolver: AsyncResolver, clock: Clock
) -> MtaStsPolicies | None:
    """MTA-STS policies fetched through the delivery resolver (None: `delivery.mta_sts` off)."""
    if not settings.delivery.mta_sts:
        return None
    ca_file = settings.delivery.tls_ca_file
    return MtaStsPolicies(
        resolver,
        clock,
        context=verifying_context(str(ca_file) if ca_file else ""),
        port=settings.delivery.mta_sts_port,
    )


def dane_validator(settings: Settings, clock: Clock) -> DaneValidator | None:
    """DANE when trust anchors are configured: its own resolver (asking with the DO bit)
    and answer cache."""
    if not settings.dns.trust_anchors:
        return None
    try:
        anchors = parse_anchors(settings.dns.trust_anchors)
    except (ValueError, dns.exception.DNSException) as exc:
        raise ConfigError(f"dns.trust_anchors: {exc}") from None
    cache = delivery_dns_cache(settings, clock)
    resolver: AsyncResolver = make_resolver(settings.dns, cache=cache)
    return DaneValidator(resolver, clock, anchors)


def shaping_lease(settings: Settings) -> float:
    """How long a shaping connection slot is held at most: one message's connection and
    DATA. A process that dies while sending frees its slots after this long."""
    timeouts = settings.delivery.timeouts
    return timeouts.connect.seconds + timeouts.data.seconds


def warn_if_insecure(url: str | RedisSettings) -> None:
    """One `redis.insecure` line at start for a remote Redis without TLS or without a password:
    the relay still starts (a private network may make it acceptable), but not silently."""
    if isinstance(url, str):
        if problem := insecure_url(url):
            log.warning("redis.insecure", url=redact_url(url), problem=problem)
    elif problem := insecure_settings(url):
        log.warning("redis.insecure", url=describe(url), problem=problem)


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


async def serve(
    settings: Settings, *, clock: Clock | None = None, stop: asyncio.Event, reclaim: bool = True
) -> None:
    """Run the relay's parts (listeners, delivery loop, reputation monitor) until `stop`.

    Raises `PartDied` when a part died first (the listeners were closed at that moment and
    the other parts stopped). As one of a supervisor's children (`relay.node.share.current`)
    the listeners share their ports with the node's other processes (SO_REUSEPORT) and the
    connection and destination limits count over the whole node. `reclaim`: take back at
    once the jobs this node's processes had leased (right only when no other process of the
    node runs: a single process starting after a crash; the supervisor does it for its
    children).
    """
    give_back_large_blocks()
    clock = clock or SystemClock()
    settings.tls.require_files()
    if settings.tls.self_signed and ensure_self_signed(
        settings.tls.cert, settings.tls.key, settings.hostname
    ):
        log.info("tls.self_signed_created", cert=str(settings.tls.cert))
    tls = server_context(settings.tls.cert, settings.tls.key)
    warn_if_insecure(settings.redis)
    async with open_redis(settings) as redis:
        queue = QueueStore.from_settings(redis, clock, settings)
        if reclaim and (taken := await queue.reclaim()):
            log.warning("queue.reclaimed", jobs=taken, node=queue.node)
        quota = quota_store(redis, settings)
        events = event_recorder(redis, settings, clock)
        activity = ActivityLog(redis, flush_every=1.0)
        resolver: AsyncResolver = make_resolver(
            settings.dns, cache=delivery_dns_cache(settings, clock)
        )
        worker = DeliveryWorker(
            queue=queue,
            settings=settings.delivery,
            resolver=resolver,
            clock=clock,
            egress_state=egress_state(redis, clock, settings.delivery),
            hostname=settings.hostname,
            on_delivered=TrafficLog.stage_delivery,
            quota=quota,
            events=events,
            on_outcomes=activity.record,
            shaping=ShapingSource(settings.delivery, redis),
            gate=FleetGate(redis, lease=shaping_lease(settings)),
            mta_sts=mta_sts_policies(settings, resolver, clock),
            tls_reports=TlsReports(redis),
            dane=dane_validator(settings, clock),
        )
        suspensions = suspension_service(redis, settings, clock, quota)
        if replayed := await suspensions.replay():  # follow-ups a crash left undone
            log.warning("suspension.replayed", accounts=replayed)
        dnsbl = dnsbl_client(settings, clock)
        traffic = TrafficLog(redis)
        guard = ContentGuard(
            dnsbl=dnsbl,
            suspensions=suspensions,
            traffic=traffic,
            clock=clock,
            deadline=settings.reputation.data_check_deadline.seconds,
        )
        lists = list_store(redis, settings, clock)
        scanner = content_scanner(redis, settings, clock, queue, suspensions, lists, events)
        node = current()
        # A supervisor's child reads the drain its parent learns; a lone process beats itself.
        drain = node.drain if node is not None else DrainFlag()
        service = SubmissionService(
            accounts=AccountStore(
                redis, clock, hashing=hashing_queue(settings.submission.auth_guard)
            ),
            queue=queue,
            quota=quota,
            content_check=guard.check if _checks_content(settings) else None,
            trace=TraceStore.stage_remember,
            spf=spf_checker(settings, clock),
            spf_mode=settings.sender_auth.spf,
            dkim=DkimSigner(
                DkimKeyStore.from_settings(redis, settings.sender_auth), clock=clock.now
            )
            if settings.sender_auth.dkim
            else None,
            identities=IdentityCache(IdentityStore(redis, clock), clock=clock.now),
            identities_mode=settings.sender_auth.identities,
            settings=settings.submission,
            hostname=settings.hostname,
            clock=clock,
            store_timeout=settings.redis.timeout.seconds,
            on_queued=worker.wake,
            min_free=settings.spool.min_free,
            events=events,
            content_scan=scanner,
            lists=lists,
            draining=drain.is_set,
        )
        servers = await start_listeners(
            listeners=settings.submission.listeners,
            settings=settings.submission,
            service=service,
            tls=tls,
            hostname=settings.hostname,
            budget=InflightBudget(settings.spool.max_inflight),
            guard=AuthGuard.from_settings(redis, settings, clock),
            connections=node_connection_limits(node, settings),
            reuse_port=node is not None,
            draining=drain.is_set,
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
        parts: dict[str, Coroutine[Any, Any, None]] = {}
        if node is None:
            parts["heartbeat"] = Heartbeat(settings, drain, clock).run(
                redis, stop, deadline=settings.redis.timeout.seconds
            )
        if settings.delivery.workers > 0:
            parts["delivery"] = worker.run(stop)
            parts["activity"] = activity.run(stop)
        if dnsbl.zones:
            parts["monitor"] = monitor.run(stop)
        parts["webhooks"] = webhook_dispatcher(redis, settings, clock).run(stop)
        parts["quarantine"] = quarantine_desk(redis, settings, clock, quota, suspensions).run(
            stop,
            redis,
            sweep_every=settings.content.sweep_interval.seconds,
            digest_every=settings.content.digest_interval.seconds,
            support=settings.reputation.support,
        )
        for listener, server in zip(settings.submission.listeners, servers, strict=True):
            parts[f"listener {listener.address}"] = listening(server, stop)
        if settings.http.enabled:
            parts[f"http {settings.http.listen}"] = http_part(
                redis, settings, clock, quota, service, stop, reuse_port=node is not None
            )

        def close_listeners() -> None:
            for server in servers:
                server.close()

        log.info(
            "relay.started",
            listeners=[f"{x.address} ({x.tls})" for x in settings.submission.listeners],
            workers=settings.delivery.workers,
            egress=[e.ip for e in settings.delivery.egress],
            event_loop=type(asyncio.get_running_loop()).__module__,
        )
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, worker.shaping.reload)
        try:
            await run_parts(parts, stop, close_listeners=close_listeners)
        finally:
            loop.remove_signal_handler(signal.SIGHUP)
            close_listeners()
            for server in servers:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(server.wait_closed(), 5)
            if scanner is not None:
                await scanner.aclose()
            with contextlib.suppress(Exception):  # the deliveries' last outcomes
                await asyncio.wait_for(activity.flush(), 5)


def http_part(
    redis: aioredis.Redis,
    settings: Settings,
    clock: Clock,
    quota: QuotaStore,
    service: SubmissionService,
    stop: asyncio.Event,
    *,
    reuse_port: bool,
) -> Coroutine[Any, Any, None]:
    """The HTTP listener (API, consoles, metrics, the applications' send API) as one more
    part of this process. Every process of a node serves it on the same port (SO_REUSEPORT),
    as the SMTP listeners: sessions are signed cookies and every state is in Redis, so any
    process can answer. The send API goes through `service`, the very object SMTP uses."""
    from relay.metrics import metrics_text
    from relay.web.api.deps_apps import app_services
    from relay.web.app import create_app, http_socket, serve_http
    from relay.web.auth import session_secret
    from relay.web.services import WebServices

    services = WebServices.build(redis, settings, clock, quota=quota, draining=service.draining)
    app = create_app(
        services,
        secret=session_secret(settings.http),
        apps=app_services(redis, settings, service, clock),
        metrics=metrics_text,
    )
    sock = http_socket(settings.http, reuse_port=reuse_port)
    log.info("http.listening", address=str(settings.http.listen))
    return serve_http(app, sock, stop)


def node_connection_limits(
    node: NodeShare | None, settings: Settings
) -> NodeConnectionLimits | None:
    """The node-wide admission of a supervisor's child; None: the process counts alone."""
    if node is None:
        return None
    return NodeConnectionLimits(
        node.connections,
        settings.submission.max_connections,
        settings.submission.max_connections_per_ip,
    )


def install_stop_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
