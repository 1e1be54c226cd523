"""The delivery loop: claim due jobs with a lease, deliver each, record the outcome.

One attempt of a job: resolve the next hops, take a slot of the destination's concurrency,
pick an egress IP (rotation over the IPs usable for that domain), and when that IP is
blocked or cannot connect, fail over to another at once (up to `failover_ips`). Then the
retry schedule decides what happens to each recipient, and the notice it calls for (if
any) is queued in the same Redis step that ends the attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING

import dns.exception
import structlog
from dns.asyncresolver import Resolver

from quota import QuotaStore, QuotaUnavailable
from relay import metrics
from relay.address import is_null_sender
from relay.clock import Clock
from relay.config import DeliverySettings
from relay.delivery.attempt import AttemptPlan, after_attempt
from relay.delivery.dane import DaneBogus, DaneValidator, tlsa_of_hops
from relay.delivery.dns_cache import CacheCounts, DnsCache
from relay.delivery.egress import EgressPool, EgressStatus
from relay.delivery.egress_state import EgressState
from relay.delivery.errors import RouteError
from relay.delivery.limits import DestinationLimiter, site_of
from relay.delivery.memory import ByteBudget
from relay.delivery.mta_sts import MtaStsPolicies, MtaStsPolicy
from relay.delivery.mx import Hop, resolve_hops
from relay.delivery.outcome import Disposition, RecipientOutcome
from relay.delivery.rates import FleetGate, Shaper
from relay.delivery.schedule import RetrySchedule
from relay.delivery.sessions import SessionPool
from relay.delivery.shaping import Action, ShapingRule
from relay.delivery.shaping_source import ShapingSource
from relay.delivery.smtp_client import AttemptReport, attempt_domain
from relay.delivery.tls_policy import TlsRequirement, tls_requirement
from relay.delivery.tls_report import TlsReports
from relay.errors import NotFound, RelayError, StoreUnavailable
from relay.notices import NoticeMessage, compose, plan_notice
from relay.queue import (
    LEASE_LOST,
    NOTICE_QUEUED,
    Job,
    LastError,
    Notice,
    QueuedMessage,
    QueueStore,
    StoredMessage,
)
from relay.redis_client import Along
from relay.reports import Outcome
from relay.spool import SpoolError

if TYPE_CHECKING:
    from relay.events import EventRecorder

__all__ = ["DeliveryWorker"]

log = structlog.get_logger("relay.delivery")

DRAIN_GRACE = 10.0
"""Seconds running deliveries get to finish when the relay stops cleanly."""

NO_EGRESS_STATUS = "4.4.5"
"""Every egress IP is disabled, listed or cooling down for the domain (RFC 3463 X.4.5)."""


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
        egress_state: EgressState,
        hostname: str,
        on_delivered: Callable[..., None] | None = None,
        quota: QuotaStore | None = None,
        events: EventRecorder | None = None,
        on_outcomes: Callable[[str, list[Outcome], float], Awaitable[None]] | None = None,
        shaping: ShapingSource | None = None,
        gate: FleetGate | None = None,
        mta_sts: MtaStsPolicies | None = None,
        tls_reports: TlsReports | None = None,
        dane: DaneValidator | None = None,
    ) -> None:
        self._on_outcomes = on_outcomes
        """(account, [(delivered|deferred|bounced, egress IP, recipient, remote reply)], now)
        of each attempt: the activity reports and recent deliveries (relay/reports.py)."""
        self._queue = queue
        self._settings = settings
        self._resolver = resolver
        self._clock = clock
        self._egress = egress_state
        self._snapshots: dict[str, asyncio.Future[EgressStatus]] = {}
        """Egress state reads in flight, by domain (shared by the deliveries asking meanwhile)."""
        self._hostname = hostname
        self._on_delivered = on_delivered
        """Adds to the pipeline that ends a job who sent what from where
        (`TrafficLog.stage_delivery`: pipe, ip, account, now, messages), for attributing a
        blocklist listing of an IP to the accounts that used it."""
        self._quota = quota
        """Notices are charged to the sender's account here (None: not charged, in tests
        of other things)."""
        self._events = events
        """Each recipient's outcome as the application's events (None: none recorded)."""
        self._schedule = RetrySchedule.from_settings(settings)
        self.shaping = shaping or ShapingSource(settings)
        """The destinations' shaping rules in force (reloaded by SIGHUP or `relay reload`)."""
        self._shaper = Shaper(gate, clock, settings.shaping_max_wait.seconds)
        self._mta_sts = mta_sts
        """Destination domains' MTA-STS policies (None: not honoured)."""
        self._tls_reports = tls_reports
        """Where sessions under an MTA-STS policy are counted (RFC 8460)."""
        self._dane = dane
        """Validates MX hosts' TLSA records (None: no DANE, no trust anchor configured)."""
        self._pool = EgressPool(settings.egress)
        self._limiter = DestinationLimiter(settings.max_connections_per_destination)
        self._memory = ByteBudget(settings.max_inflight_bytes)
        self.sessions = SessionPool(
            idle=settings.session_idle.seconds, max_messages=settings.session_max_messages
        )
        self._wake = asyncio.Event()
        self._tasks: dict[asyncio.Task[None], Job] = {}
        """Deliveries running, with the job each holds a lease on."""

    def dns_counts(self) -> CacheCounts | None:
        """Hits and misses of the process's DNS answer cache (None: no cache), for metrics."""
        cache = self._resolver.cache
        return cache.counts() if isinstance(cache, DnsCache) else None

    def wake(self) -> None:
        """New mail was queued: look for work now instead of at the next poll."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        heartbeat = asyncio.create_task(self._heartbeat(stop))
        grace = 0.0  # dying: let the error out at once (the process stops taking mail);
        try:  #         the jobs cut short come back by lease, or by the supervisor at once
            while not stop.is_set():
                await self.shaping.check()
                await self.run_due(stop)
                if stop.is_set():
                    break
                waiters = [
                    asyncio.ensure_future(self._wake.wait()),
                    asyncio.ensure_future(stop.wait()),
                ]
                await asyncio.wait(
                    waiters,
                    timeout=self._settings.poll_interval.seconds,
                    return_when="FIRST_COMPLETED",
                )
                for waiter in waiters:
                    waiter.cancel()
            grace = DRAIN_GRACE
        finally:
            heartbeat.cancel()
            await self._drain(grace)
            await self.sessions.close()
            await self._shaper.close()

    async def _heartbeat(self, stop: asyncio.Event) -> None:
        """Renew the leases of the jobs being attempted every third of a lease, so leases are
        short (a crashed worker's jobs come back soon) however long a delivery takes."""
        lease = self._settings.lease.seconds
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), lease / 3)
            try:
                await self._queue.renew(list(self._tasks.values()), lease)
            except StoreUnavailable as exc:
                log.error("queue.renew_failed", error=str(exc), jobs=len(self._tasks))

    async def run_due(self, stop: asyncio.Event | None = None) -> int:
        """Attempt every job due now (and what comes due meanwhile, such as the notices they
        queue); return when none is due and none is running. Returns the attempts started.

        Slots are refilled as soon as one frees up, so one slow server does not hold the rest.
        """
        started = 0
        lease = self._settings.lease.seconds
        while stop is None or not stop.is_set():
            free = self._settings.workers - len(self._tasks)
            jobs: list[Job] = []
            if free > 0:
                self._wake.clear()
                try:
                    jobs = await self._queue.claim(free, lease)
                except StoreUnavailable as exc:
                    log.error("queue.claim_failed", error=str(exc))
            for job in jobs:
                task = asyncio.create_task(self.deliver(job))
                self._tasks[task] = job
                task.add_done_callback(self._finished)
            started += len(jobs)
            if not self._tasks:
                return started
            waiters = {asyncio.ensure_future(self._wake.wait())}
            if stop is not None:
                waiters.add(asyncio.ensure_future(stop.wait()))
            await asyncio.wait({*self._tasks, *waiters}, return_when="FIRST_COMPLETED")
            for waiter in waiters:
                waiter.cancel()
        return started

    async def close(self) -> None:
        """Finish running deliveries and close idle sessions (for callers of `run_due`)."""
        await self._drain()
        await self.sessions.close()
        await self._shaper.close()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("delivery.crashed", error=repr(task.exception()))

    async def _drain(self, grace: float = DRAIN_GRACE) -> None:
        """On stop: let running deliveries finish for a while; the rest come back by lease."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
        for task in pending:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*pending, return_exceptions=True)

    async def deliver(self, job: Job) -> None:
        """One attempt of one job; its result (and any notice) goes back to the queue."""
        try:
            meta = job.meta or await self._queue.meta(job.message_id)
        except NotFound:
            meta = None
        if meta is None:
            log.warning("delivery.message_missing", job=job.id, message_id=job.message_id)
            await self._queue.complete(job)
            return
        async with self._memory.hold(meta.size):
            try:
                stored = await self._queue.load_claimed(job)
            except NotFound:
                await self._queue.complete(job)
                return
            except SpoolError as exc:
                await self._unreadable(job, exc)
                return
            await self._deliver(job, stored)

    async def _deliver(self, job: Job, stored: StoredMessage) -> None:
        meta = stored.meta
        rule = self.shaping.current.rule_for(job.domain)
        try:
            hops = await resolve_hops(
                job.domain,
                routes=self._settings.routes,
                mx_port=self._settings.mx_port,
                resolver=self._resolver,
                public_only=not self._settings.allow_private_destinations,
            )
        except RouteError as exc:
            disposition = Disposition.PERMANENT if exc.code >= 500 else Disposition.TRANSIENT
            outcomes = _all(job, disposition, exc.code, exc.status, str(exc))
        else:
            rule = self.shaping.current.rule_for(job.domain, [hop.host for hop in hops])
            try:
                outcomes = await self._attempt(job, meta, stored.body, hops, rule)
            except _Postponed as wait:
                await self._postpone(job, rule, wait)
                return
        await self._conclude(job, stored, outcomes, rule)

    async def _postpone(self, job: Job, rule: ShapingRule, wait: _Postponed) -> None:
        """The rule holds every usable IP back (rate, connections, suspension): the job goes
        back to the queue for that long, no attempt counted, and this worker takes other mail."""
        log.info(
            "delivery.postponed",
            message_id=job.message_id,
            job=job.id,
            domain=job.domain,
            rule=rule.name,
            until=wait.until,
            reason=wait.reason,
        )
        if await self._queue.postpone(job, wait.until) is LEASE_LOST:
            log.warning("delivery.lease_lost", job=job.id, message_id=job.message_id)

    async def _conclude(
        self,
        job: Job,
        stored: StoredMessage,
        outcomes: list[RecipientOutcome],
        rule: ShapingRule | None = None,
    ) -> None:
        """Apply the retry schedule to the outcomes; end or reschedule the job, with its notice."""
        meta = stored.meta
        now = self._clock.now()
        held_for = meta.held_total(now)
        plan = after_attempt(
            outcomes,
            now=now,
            created_at=meta.created_at,
            schedule=self._schedule.with_curve(rule.retry) if rule else self._schedule,
            held_for=held_for,
            delay_notified=meta.delay_notified,
            attempt=job.attempts + 1,
        )
        for outcome in outcomes:
            _log_outcome(job, meta.account, outcome)
        along = self._traffic(meta.account, outcomes, now)
        if self._events is not None and not meta.notice:
            along += self._events.attempted_along(meta.account, meta.id, plan)
        await self._report_outcomes(meta.account, outcomes, now)
        for outcome in plan.expired:
            _log_outcome(job, meta.account, outcome, event="delivery.expired")
        notice = await self._notice(job, stored, plan, now, held_for)
        charge = None
        if notice is not None:
            notice, charge = await self._charge(notice, job, now)
        if plan.done:
            result = await self._queue.complete(job, notice, along)
        else:
            assert plan.retry_at is not None
            result = await self._queue.reschedule(
                job, plan.pending, plan.retry_at, _last_error(plan), notice, along
            )
        if charge is not None:
            await self._settle(charge, meta.account, queued=result is NOTICE_QUEUED)
        if self._events is not None and not meta.notice:
            delay_sent = notice is not None and notice.kind == "delay" and result is NOTICE_QUEUED
            await self._events.attempted_after(
                meta.account, meta.id, plan, delay_notice_sent=delay_sent
            )
        if result is LEASE_LOST:
            log.warning("delivery.lease_lost", job=job.id, message_id=job.message_id)
        elif notice is not None and result is NOTICE_QUEUED:
            log.info(
                "notice.queued",
                message_id=job.message_id,
                notice_id=notice.id,
                kind=notice.kind,
                account=meta.account,
                domain=job.domain,
                to=notice.recipient,
            )
        elif notice is not None:
            log.info("notice.skipped", message_id=job.message_id, reason="delay notice sent")

    async def _unreadable(self, job: Job, exc: SpoolError) -> None:
        """The body is missing or unreadable: never dropped in silence. The job waits on the
        retry schedule (the disk may come back) with the error for operators to see, and
        expires with a failure notice that carries the headers still known."""
        log.error("spool.unreadable", message_id=job.message_id, job=job.id, error=str(exc))
        meta = await self._queue.meta(job.message_id)
        outcomes = _all(job, Disposition.TRANSIENT, 451, "4.3.0", f"cannot read the message: {exc}")
        stored = StoredMessage(meta, await self._queue.prefix(job.message_id))
        await self._conclude(job, stored, outcomes)

    async def _report_outcomes(
        self, account: str, outcomes: list[RecipientOutcome], now: float
    ) -> None:
        """The outcomes for the reports and the customer's page (counted in memory, written
        once a second by the activity log): report data, never a failed delivery."""
        if self._on_outcomes is None:
            return
        names = [
            Outcome(
                _EVENTS[o.disposition].partition(".")[2],
                o.egress_ip,
                o.recipient,
                f"{o.code} {o.status} {o.text}",
            )
            for o in outcomes
        ]
        try:
            await self._on_outcomes(account, names, now)
        except RelayError as exc:
            log.warning("activity.record_failed", account=account, error=str(exc))

    def _traffic(self, account: str, outcomes: list[RecipientOutcome], now: float) -> list[Along]:
        """Messages delivered per egress IP, counted for the account (attribution data for
        listings), sent with the end of the job: no round trip of its own, and a failure
        never fails the delivery."""
        if self._on_delivered is None:
            return []
        sent: dict[str, int] = {}
        for o in outcomes:
            if o.disposition is Disposition.DELIVERED and o.egress_ip:
                sent[o.egress_ip] = sent.get(o.egress_ip, 0) + 1
        record = self._on_delivered
        return [
            Along(
                "traffic.record_failed",
                partial(record, ip=ip, account=account, now=now, messages=count),
                {"ip": ip, "account": account},
            )
            for ip, count in sent.items()
        ]

    async def _attempt(
        self, job: Job, meta: QueuedMessage, body: bytes, hops: list[Hop], rule: ShapingRule
    ) -> list[RecipientOutcome]:
        """Deliver from one IP, failing over to others when the IP is at fault (or when the
        destination's rule holds it back, or a reaction to its reply moves the mail on).
        Raises _Postponed when the rule holds back every IP it could use."""
        account = meta.account
        sts = await self._sts_for(job.domain)
        tls = tls_requirement(rule, sts, self._settings.tls_ca_file)
        try:
            tls = await self._with_dane(tls, job.domain, hops)
        except (DaneBogus, dns.exception.DNSException) as exc:  # never less than asked
            return _all(job, Disposition.TRANSIENT, 451, "4.7.5", f"DANE: {exc}")
        scope = rule.scope(job.domain)
        held: list[tuple[float, str]] = []
        status = await self._status(job.domain)
        now = self._clock.now()
        tried: set[str] = set()
        unreachable: list[str] = []
        report: AttemptReport | None = None
        async with self._limiter.slot(site_of([(h.host, h.port) for h in hops])):
            for _ in range(self._settings.failover_ips if len(self._pool) else 1):
                egress = self._pool.pick(
                    job.domain, lambda e: e.ip not in tried and status.usable(e.ip, now)
                )
                if egress is None and len(self._pool):
                    break
                if egress is not None:
                    tried.add(egress.ip)
                ip = egress.ip if egress is not None else ""
                admission = await self._shaper.admit(rule, scope, ip)
                if admission is not None and admission.verdict != "admitted":
                    held.append((admission.at, f"{ip or 'default'} {admission.verdict}"))
                    continue
                try:
                    report = await attempt_domain(
                        hops=hops,
                        egress=egress,
                        mail_from=meta.mail_from,
                        recipients=list(job.recipients),
                        body=body,
                        timeouts=self._settings.timeouts,
                        helo=self._hostname,
                        sessions=self.sessions,
                        dsn=meta.dsn,
                        tls=tls,
                        max_messages=rule.max_messages_per_connection,
                        idle=rule.idle_timeout.seconds,
                    )
                finally:
                    self._shaper.release(rule, scope, ip, admission)
                await self._report_tls(job.domain, sts, ip, report)
                if await self._react(rule, scope, ip, report) == "move" and egress is not None:
                    continue  # this IP is suspended for the rule: the next one takes the mail
                if egress is None or report.ip_problem is None:
                    if egress is not None and report.connected:
                        await self._got_through(egress.ip, job.domain, unreachable, status)
                    break
                _log_failover(job, account, egress.ip, report)
                if report.ip_problem == "block":
                    await self._cool(egress.ip, job.domain, block=True)
                else:
                    unreachable.append(egress.ip)
        if report is None and held:
            until, _ = min(held)
            raise _Postponed(max(until, now), "; ".join(reason for _, reason in held))
        if report is None:
            reasons = "; ".join(f"{e.ip} {status.why_not(e.ip, now)}" for e in self._pool.addresses)
            log.warning("delivery.no_egress", message_id=job.message_id, domain=job.domain)
            return _all(
                job,
                Disposition.TRANSIENT,
                451,
                NO_EGRESS_STATUS,
                f"no egress IP usable for {job.domain} ({reasons})",
            )
        return report.outcomes

    async def _sts_for(self, domain: str) -> MtaStsPolicy | None:
        """The domain's MTA-STS policy in force (MX path only: a static route is the
        operator's choice of server); it raises the rule's TLS mode."""
        if self._mta_sts is None or self._routed(domain):
            return None
        return await self._mta_sts.policy(domain)

    async def _with_dane(self, tls: TlsRequirement, domain: str, hops: list[Hop]) -> TlsRequirement:
        """DANE for the MX hosts with DNSSEC-validated TLSA records (before MTA-STS and the
        rule, RFC 8461 section 2). Raises DaneBogus, or DNSException when a lookup fails."""
        if self._dane is None or self._routed(domain):
            return tls
        tlsa = await tlsa_of_hops(self._dane, [(hop.host, hop.port) for hop in hops])
        return replace(tls, tlsa=tlsa, policy="dane") if tlsa else tls

    async def _report_tls(
        self, domain: str, sts: MtaStsPolicy | None, ip: str, report: AttemptReport
    ) -> None:
        if self._tls_reports is None or sts is None:
            return
        failures = tuple((result, ip, mx) for result, mx in report.tls_failures)
        # under `testing`, the session that delivered may be one that failed the checks
        succeeded = report.connected and (sts.mode == "enforce" or not failures)
        try:
            await self._tls_reports.record(
                domain,
                sts,
                self._clock.now(),
                successes=1 if succeeded else 0,
                failures=failures,
            )
        except StoreUnavailable as exc:  # a report, not the delivery
            log.warning("tls_report.record_failed", domain=domain, error=str(exc))

    def _routed(self, domain: str) -> bool:
        routes = self._settings.routes
        return bool(routes.get(domain.lower().rstrip(".")) or routes.get("*"))

    async def _react(
        self, rule: ShapingRule, scope: str, ip: str, report: AttemptReport
    ) -> Action | None:
        """The rule's reaction to the server's reply, applied for the whole fleet; "move"
        only when nothing was delivered (the mail can then go again from another IP)."""
        if not rule.reactions:
            return None
        for outcome in report.outcomes:
            if outcome.disposition is Disposition.DELIVERED or outcome.remote is None:
                continue
            reaction = rule.reaction_to(outcome.code, outcome.status, outcome.text)
            if reaction is not None:
                await self._shaper.react(scope, ip, reaction)
                delivered = any(o.disposition is Disposition.DELIVERED for o in report.outcomes)
                return "suspend" if reaction.action == "move" and delivered else reaction.action
        return None

    async def _status(self, domain: str) -> EgressStatus:
        """The egress state for a delivery to `domain`. Deliveries that ask while a read for
        the same domain is in flight share it (as fresh as reading again; many workers of a
        busy process deliver to the same domain at once)."""
        pending = self._snapshots.get(domain)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[EgressStatus] = asyncio.get_running_loop().create_future()
        self._snapshots[domain] = future
        status = EgressStatus()
        try:
            status = await self._egress.snapshot(domain)
        except StoreUnavailable as exc:  # deliver anyway: the state is advice, not a gate
            log.error("egress.state_unavailable", error=str(exc))
        finally:
            del self._snapshots[domain]
            future.set_result(status)  # also when cancelled: the others go on
        return status

    async def _got_through(
        self, ip: str, domain: str, unreachable: list[str], status: EgressStatus
    ) -> None:
        """IPs that could not connect where this one could are likely at fault."""
        for other in unreachable:
            await self._cool(other, domain, block=False)
        if status.failures.get(ip):
            with contextlib.suppress(StoreUnavailable):
                await self._egress.record_success(ip, domain)

    async def _cool(self, ip: str, domain: str, *, block: bool) -> None:
        until: float | None
        try:
            if block:
                until = await self._egress.record_block(ip, domain)
            else:
                until = await self._egress.record_failure(ip, domain)
        except StoreUnavailable as exc:
            log.error("egress.state_unavailable", error=str(exc))
            return
        if until is not None:
            log.warning(
                "egress.cooling",
                egress_ip=ip,
                domain=domain,
                until=until,
                cause="block" if block else "connection failures",
            )

    async def _notice(
        self, job: Job, stored: StoredMessage, plan: AttemptPlan, now: float, held_for: float
    ) -> Notice | None:
        meta = stored.meta
        if is_null_sender(meta.mail_from):
            return None  # never a notice about a notice (or any mail from <>)
        others: list[RecipientOutcome] = []
        if plan.delay_notice:
            others = await self._delayed_elsewhere(job)
        decided = plan_notice(
            plan,
            mail_from=meta.mail_from,
            dsn=meta.dsn,
            now=now,
            expires_at=self._schedule.expires_at(meta.created_at, held_for),
            delay_also=others,
        )
        if decided is None:
            return None
        if not meta.sender_verified:
            log.info(
                "notice.suppressed",
                message_id=meta.id,
                account=meta.account,
                kind=decided.kind,
                to=meta.mail_from,
                reason="unverified sender",
            )
            return None
        notice_id = self._queue.new_id()
        body = compose(
            NoticeMessage(
                notice_id=notice_id,
                hostname=self._hostname,
                sender=meta.mail_from,
                queue_id=meta.id,
                arrival=meta.created_at,
                now=now,
                original=stored.body,
                reports=decided.reports,
                return_full=meta.dsn.ret == "FULL",
                envid=meta.dsn.envid,
            )
        )
        return Notice(
            id=notice_id,
            recipient=meta.mail_from,
            account=meta.account,
            body=body,
            kind=decided.kind,
            delay=decided.delay,
        )

    async def _charge(
        self, notice: Notice, job: Job, now: float
    ) -> tuple[Notice | None, str | None]:
        """Reserve one unit of the sender account's limits for the notice: (the notice, or
        None when a limit refuses it; the quota transaction to settle, if any).

        A notice is mail the account caused: it counts on the 24 h quota and the per-minute
        rate, and on the per-recipient rate to the notice address, so one account cannot
        use bounces to flood an address. Redis failing here sends the notice uncharged.
        """
        if self._quota is None:
            return notice, None
        tx = self._quota.new_transaction()
        try:
            decision = await self._quota.reserve(notice.account, tx, notice.recipient, now)
        except QuotaUnavailable as exc:
            log.warning("notice.uncharged", message_id=job.message_id, error=str(exc))
            return notice, None
        if decision.allowed:
            return notice, tx
        log.warning(
            "notice.suppressed",
            message_id=job.message_id,
            account=notice.account,
            kind=notice.kind,
            to=notice.recipient,
            reason=decision.verdict.name.lower(),
        )
        return None, None

    async def _settle(self, tx: str, account: str, *, queued: bool) -> None:
        """Keep the unit when the notice was queued; give it back when it was not (a lost
        lease, or a delay notice another worker already sent)."""
        assert self._quota is not None
        try:
            if queued:
                await self._quota.commit(account, tx)
            else:
                await self._quota.release(account, tx, self._clock.now())
        except QuotaUnavailable as exc:
            log.warning("notice.charge_unsettled", account=account, error=str(exc))

    async def _delayed_elsewhere(self, job: Job) -> list[RecipientOutcome]:
        """Recipients of the message's other domains that were tried and are still pending."""
        try:
            jobs = await self._queue.jobs_of(job.message_id)
        except (NotFound, StoreUnavailable):
            return []
        outcomes = []
        for other in jobs:
            error = other.last_error
            if other.id == job.id or not other.attempts or error is None:
                continue
            outcomes += [
                RecipientOutcome(
                    rcpt,
                    Disposition.TRANSIENT,
                    error.code,
                    error.status,
                    error.text,
                    error.mx,
                    error.egress_ip,
                    False,
                )
                for rcpt in other.recipients
            ]
        return outcomes


def _last_error(plan: AttemptPlan) -> LastError | None:
    """The first deferred recipient's outcome, stored with the job as fields."""
    if not plan.deferred:
        return None
    first = plan.deferred[0]
    return LastError(first.code, first.status, first.text, first.egress_ip, first.remote)


class _Postponed(Exception):
    """The destination's rule holds back every usable IP until `until`."""

    def __init__(self, until: float, reason: str) -> None:
        super().__init__(reason)
        self.until = until
        self.reason = reason


def _all(
    job: Job, disposition: Disposition, code: int, status: str, text: str
) -> list[RecipientOutcome]:
    return [
        RecipientOutcome(
            recipient=rcpt,
            disposition=disposition,
            code=code,
            status=status,
            text=text,
            remote=None,
            egress_ip=None,
            tls=False,
        )
        for rcpt in job.recipients
    ]


def _log_failover(job: Job, account: str, ip: str, report: AttemptReport) -> None:
    first = report.outcomes[0]
    log.info(
        "delivery.failover",
        message_id=job.message_id,
        account=account,
        domain=job.domain,
        egress_ip=ip,
        problem=report.ip_problem,
        mx=first.remote,
        reply=f"{first.code} {first.status} {first.text}",
    )


_EVENTS = {
    Disposition.DELIVERED: "delivery.delivered",
    Disposition.TRANSIENT: "delivery.deferred",
    Disposition.PERMANENT: "delivery.bounced",
}


def _log_outcome(
    job: Job, account: str, outcome: RecipientOutcome, event: str | None = None
) -> None:
    name = event or _EVENTS[outcome.disposition]
    metrics.record("recipients", outcome=name.partition(".")[2], egress_ip=outcome.egress_ip or "")
    log.info(
        event or _EVENTS[outcome.disposition],
        message_id=job.message_id,
        account=account,
        domain=job.domain,
        recipient=outcome.recipient,
        attempt=job.attempts + 1,
        egress_ip=outcome.egress_ip,
        mx=outcome.remote,
        tls=outcome.tls,
        tls_policy=outcome.tls_policy,
        reply=f"{outcome.code} {outcome.status} {outcome.text}",
    )
