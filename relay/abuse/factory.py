"""The abuse services built from the settings (for `relay run` and the operator commands)."""

from __future__ import annotations

import redis.asyncio as aioredis

from quota import QuotaStore
from relay.abuse.audit import AuditLog
from relay.abuse.notify import Notifier
from relay.abuse.service import SuspensionService
from relay.abuse.store import SuspensionStore
from relay.accounts import AccountStore
from relay.clock import Clock
from relay.config import Settings
from relay.delivery.mx import make_resolver
from relay.queue import QueueStore
from reputation import DnsblClient, EscalationPolicy, Zone

__all__ = ["dnsbl_client", "suspension_service"]


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
    )


def dnsbl_client(settings: Settings, clock: Clock) -> DnsblClient:
    rep = settings.reputation
    return DnsblClient(
        make_resolver(settings.dns),
        [Zone(z.zone, z.kind, dict(z.meanings)) for z in rep.zones],
        clock=clock.now,
        cache_ttl=rep.cache_ttl.seconds,
        timeout=rep.lookup_timeout.seconds,
    )
