"""The delivery loop: claim due jobs with a lease, deliver each, record the outcome."""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from dns.asyncresolver import Resolver

from relay.clock import Clock
from relay.config import DeliverySettings
from relay.delivery.attempt import Done, after_attempt
from relay.delivery.egress import EgressPool
from relay.delivery.errors import RouteError
from relay.delivery.mx import resolve_hops
from relay.delivery.outcome import Disposition, RecipientOutcome
from relay.delivery.smtp_client import send_to_domain
from relay.errors import NotFound, StoreUnavailable
from relay.queue import Job, QueueStore

__all__ = ["DeliveryWorker"]

log = structlog.get_logger("relay.delivery")


class DeliveryWorker:
    """Runs up to `settings.workers` deliveries at once in this process.

    Several processes may run workers on one Redis: a job is leased to one at a time, and a
    job whose worker died comes due again when its lease ends (at-least-once delivery).
    """

    def __init__(
        self,
        *,
        queue: QueueStore,
        settings: DeliverySettings,
        resolver: Resolver,
        clock: Clock,
    ) -> None:
        self._queue = queue
        self._settings = settings
        self._resolver = resolver
        self._clock = clock
        self._pool = EgressPool(settings.egress)
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    def wake(self) -> None:
        """New mail was queued: look for work now instead of at the next poll."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        slots = self._settings.workers
        lease = self._settings.lease.seconds
        while not stop.is_set():
            free = slots - len(self._tasks)
            jobs: list[Job] = []
            if free > 0:
                try:
                    jobs = await self._queue.claim(free, lease)
                except StoreUnavailable as exc:
                    log.error("queue.claim_failed", error=str(exc))
            for job in jobs:
                task = asyncio.create_task(self.deliver(job))
                self._tasks.add(task)
                task.add_done_callback(self._finished)
            if jobs and len(jobs) == free:
                continue  # maybe more is due; the slots decide
            self._wake.clear()
            waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
            await asyncio.wait(waiters, timeout=self._poll_delay(), return_when="FIRST_COMPLETED")
            for waiter in waiters:
                waiter.cancel()
        await self._drain()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._wake.set()  # a slot is free
        if not task.cancelled() and task.exception() is not None:
            log.error("delivery.crashed", error=repr(task.exception()))

    def _poll_delay(self) -> float:
        return self._settings.poll_interval.seconds

    async def _drain(self, grace: float = 10.0) -> None:
        """On stop: let running deliveries finish for a while; the rest come back by lease."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
        for task in pending:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*pending, return_exceptions=True)

    async def deliver(self, job: Job) -> None:
        """One attempt of one job; its result goes back to the queue."""
        try:
            stored = await self._queue.load(job.message_id)
        except NotFound:
            log.warning("delivery.message_missing", job=job.id, message_id=job.message_id)
            await self._queue.complete(job)
            return
        meta = stored.meta
        egress = self._pool.next(job.domain)
        try:
            hops = await resolve_hops(
                job.domain,
                routes=self._settings.routes,
                mx_port=self._settings.mx_port,
                resolver=self._resolver,
            )
            outcomes = await send_to_domain(
                hops=hops,
                egress=egress,
                mail_from=meta.mail_from,
                recipients=list(job.recipients),
                body=stored.body,
                timeouts=self._settings.timeouts,
            )
        except RouteError as exc:
            disposition = Disposition.PERMANENT if exc.code >= 500 else Disposition.TRANSIENT
            outcomes = [
                RecipientOutcome(
                    recipient=rcpt,
                    disposition=disposition,
                    code=exc.code,
                    status=exc.status,
                    text=str(exc),
                    remote=None,
                    egress_ip=egress.ip if egress else None,
                    tls=False,
                )
                for rcpt in job.recipients
            ]
        for outcome in outcomes:
            _log_outcome(job, meta.account, outcome)
        result = after_attempt(
            outcomes, now=self._clock.now(), retry_interval=self._settings.retry_interval.seconds
        )
        if isinstance(result, Done):
            kept = await self._queue.complete(job)
        else:
            kept = await self._queue.reschedule(job, result.pending, result.due_at, result.error)
        if not kept:
            log.warning("delivery.lease_lost", job=job.id, message_id=job.message_id)


_EVENTS = {
    Disposition.DELIVERED: "delivery.delivered",
    Disposition.TRANSIENT: "delivery.deferred",
    Disposition.PERMANENT: "delivery.bounced",
}


def _log_outcome(job: Job, account: str, outcome: RecipientOutcome) -> None:
    log.info(
        _EVENTS[outcome.disposition],
        message_id=job.message_id,
        account=account,
        domain=job.domain,
        recipient=outcome.recipient,
        attempt=job.attempts + 1,
        egress_ip=outcome.egress_ip,
        mx=outcome.remote,
        tls=outcome.tls,
        reply=f"{outcome.code} {outcome.status} {outcome.text}",
    )
