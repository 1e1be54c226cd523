"""The content services built from the settings (for `relay run` and the operator commands)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import redis.asyncio as aioredis

from quota import QuotaStore
from relay.abuse.audit import AuditLog
from relay.abuse.service import SuspensionService
from relay.accounts import AccountStore
from relay.clock import Clock
from relay.config import Settings
from relay.content.clamd import ClamdAddress, ClamdClient
from relay.content.desk import QuarantineDesk
from relay.content.lists import ListStore
from relay.content.quarantine import Held, QuarantineStore
from relay.content.rspamd import RspamdClient
from relay.content.scanner import ContentScanner, MalwarePolicy
from relay.content.stats import ContentStats
from relay.content.verdict import OnError, ScanPolicy
from relay.queue import QueueStore

if TYPE_CHECKING:
    from relay.events import EventRecorder

__all__ = ["content_scanner", "list_store", "quarantine_desk", "quarantine_store"]


def quarantine_store(
    redis: aioredis.Redis, settings: Settings, clock: Clock, queue: QueueStore
) -> QuarantineStore:
    content = settings.content
    return QuarantineStore(
        redis,
        queue.spool,
        clock,
        queue.node,
        {
            Held.MALWARE: content.malware_retention.seconds,
            Held.SPAM: content.spam_retention.seconds,
        },
    )


def list_store(redis: aioredis.Redis, settings: Settings, clock: Clock) -> ListStore:
    return ListStore(redis, clock, refresh=settings.content.lists_refresh.seconds)


def content_scanner(
    redis: aioredis.Redis,
    settings: Settings,
    clock: Clock,
    queue: QueueStore,
    suspensions: SuspensionService | None,
    lists: ListStore | None,
    events: EventRecorder | None = None,
) -> ContentScanner | None:
    """None when neither scanner is configured (the DATA path then scans nothing)."""
    content = settings.content
    if content.clamd is None and content.rspamd is None:
        return None
    return ContentScanner(
        clamd=(
            ClamdClient(ClamdAddress.parse(content.clamd.address), fdpass=content.clamd.fdpass)
            if content.clamd
            else None
        ),
        rspamd=(
            RspamdClient(content.rspamd.url, settings_id=content.rspamd.settings_id)
            if content.rspamd
            else None
        ),
        clamd_deadline=content.clamd.deadline.seconds if content.clamd else 0.0,
        rspamd_deadline=content.rspamd.deadline.seconds if content.rspamd else 0.0,
        policy=ScanPolicy(
            malware_on_error=OnError(content.clamd.on_error if content.clamd else "tempfail"),
            spam_on_error=OnError(content.rspamd.on_error if content.rspamd else "fail_open"),
            quarantine_at=content.spam_quarantine,
            reject_at=content.spam_reject,
        ),
        malware=MalwarePolicy(
            suspend_after=content.malware_suspend_after, window=content.malware_window.seconds
        ),
        quarantine=quarantine_store(redis, settings, clock, queue),
        stats=ContentStats(redis),
        clock=clock,
        lists=lists,
        audit=AuditLog(redis, clock),
        suspensions=suspensions,
        events=events,
    )


def quarantine_desk(
    redis: aioredis.Redis,
    settings: Settings,
    clock: Clock,
    quota: QuotaStore,
    suspensions: SuspensionService,
) -> QuarantineDesk:
    queue = QueueStore.from_settings(redis, clock, settings)
    return QuarantineDesk(
        store=quarantine_store(redis, settings, clock, queue),
        queue=queue,
        quota=quota,
        audit=AuditLog(redis, clock),
        notifier=suspensions.notifier,
        accounts=AccountStore(redis, clock),
        clock=clock,
    )
