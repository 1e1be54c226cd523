"""The abuse services built from the settings (for `relay run` and the operator commands)."""

from __future__ import annotations

import redis.asyncio as aioredis

from quota import QuotaStore
from relay import metrics
from relay.abuse.audit import AuditLog
from relay.abuse.changes import AccountChanges
from relay.abuse.complaint_desk import ComplaintDesk
from relay.abuse.complaints import TraceStore
from relay.abuse.notify import Notifier
from relay.abuse.review import ReviewStore
from relay.abuse.service import SuspensionService
from relay.abuse.store import SuspensionStore
from relay.accounts import AccountStore
from relay.clock import Clock
from relay.config import Settings
from relay.delivery.mx import make_resolver
from relay.events import event_recorder
from relay.queue import QueueStore
from reputation import DnsblClient, EscalationPolicy, Zone

__all__ = ["complaint_desk", "dnsbl_client", "suspension_service"]


def suspension_service(
    redis: aioredis.Redis, settings: Settings, clock: Clock, quota: QuotaStore
) -> SuspensionService:
    rep = settings.reputation
    queue = QueueStore.from_settings(redis, clock, settings)
    return SuspensionService(
        store=SuspensionStore(redis),
        audit=AuditLog(redis, clock),
        quota=quota,
        queue=queue,
        accounts=AccountStore(redis, clock),
        notifier=Notifier(
            queue,
            sender=rep.notices_from or f"postmaster@{settings.hostname}",
            operators=tuple(rep.operators),
            support=rep.support,
        ),
        clock=clock,
        policy=EscalationPolicy(
            second_offence_min=rep.second_offence_min.seconds,
            growth=rep.offence_growth,
            deny_from=rep.deny_from_offence,
        ),
        changes=AccountChanges(redis, quota, node=settings.node.id),
    )


def complaint_desk(
    redis: aioredis.Redis, settings: Settings, clock: Clock, quota: QuotaStore
) -> ComplaintDesk:
    return ComplaintDesk(
        suspensions=suspension_service(redis, settings, clock, quota),
        traces=TraceStore(redis),
        reviews=ReviewStore(redis),
        accounts=AccountStore(redis, clock),
        clock=clock,
        events=event_recorder(redis, settings, clock),
    )


def dnsbl_client(settings: Settings, clock: Clock) -> DnsblClient:
    rep = settings.reputation
    return DnsblClient(
        make_resolver(settings.dns),
        [Zone(z.zone, z.kind, dict(z.meanings)) for z in rep.zones],
        clock=clock.now,
        cache_ttl=rep.cache_ttl.seconds,
        timeout=rep.lookup_timeout.seconds,
        on_lookup=metrics.dnsbl_lookup,
    )
