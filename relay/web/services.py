"""The service objects the web app calls: the same ones the CLI builds (relay/cli/*), so the
browser, the API and the command line apply one set of rules."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis

from quota import QuotaStore
from relay.abuse.audit import AuditLog
from relay.abuse.factory import suspension_service
from relay.abuse.service import SuspensionService
from relay.abuse.unblock import UnblockRequests
from relay.accounts import AccountStore
from relay.accounts.hashing import HashingQueue
from relay.clock import Clock
from relay.config import Settings
from relay.content.desk import QuarantineDesk
from relay.content.factory import list_store, quarantine_desk
from relay.content.lists import ListStore
from relay.delivery.egress_state import EgressState, egress_state
from relay.queue import QueueStore
from relay.reports import ActivityLog
from relay.submission.guard import AuthGuard
from relay.web.auth import OperatorStore

__all__ = ["WebServices"]


@dataclass(frozen=True)
class WebServices:
    settings: Settings
    redis: aioredis.Redis
    clock: Clock
    accounts: AccountStore
    quota: QuotaStore
    suspensions: SuspensionService
    queue: QueueStore
    egress: EgressState
    audit: AuditLog
    unblocks: UnblockRequests
    operators: OperatorStore
    guard: AuthGuard
    activity: ActivityLog
    quarantine: QuarantineDesk
    lists: ListStore
    draining: Callable[[], bool] = lambda: False
    """Whether the node is draining (`relay node drain`)."""

    @classmethod
    def build(
        cls,
        redis: aioredis.Redis,
        settings: Settings,
        clock: Clock,
        *,
        quota: QuotaStore,
        hashing: HashingQueue | None = None,
        draining: Callable[[], bool] = lambda: False,
    ) -> WebServices:
        suspensions = suspension_service(redis, settings, clock, quota)
        return cls(
            settings=settings,
            redis=redis,
            clock=clock,
            accounts=AccountStore(redis, clock, hashing=hashing),
            quota=quota,
            suspensions=suspensions,
            queue=QueueStore.from_settings(redis, clock, settings),
            egress=egress_state(redis, clock, settings.delivery),
            audit=suspensions.audit,
            unblocks=UnblockRequests(redis, suspensions.audit, clock),
            operators=OperatorStore(redis, hashing),
            guard=AuthGuard.from_settings(redis, settings, clock),
            activity=ActivityLog(redis),
            quarantine=quarantine_desk(redis, settings, clock, quota, suspensions),
            lists=list_store(redis, settings, clock),
            draining=draining,
        )

    async def ready(self) -> dict[str, str]:
        """What `/readyz` checks: the node is not draining (a load balancer then sends
        elsewhere), Redis answers, the spool folder takes a file. Empty: ready."""
        problems: dict[str, str] = {}
        if self.draining():
            problems["node"] = "draining"
        try:
            await self.redis.ping()
        except Exception as exc:  # any failure means not ready; the reason is shown
            problems["redis"] = type(exc).__name__
        spool = Path(self.settings.spool.dir)
        try:
            with tempfile.NamedTemporaryFile(dir=spool, prefix=".ready-", delete=True) as probe:
                probe.write(b"ok")
                probe.flush()
                os.fsync(probe.fileno())
        except OSError as exc:
            problems["spool"] = exc.strerror or type(exc).__name__
        return problems
