"""The delivery engine on a fake clock: a real queue in Redis, real sinks, driven step by step."""

from __future__ import annotations

import contextlib
import email
import email.message
import email.policy
from collections.abc import AsyncIterator
from dataclasses import dataclass

import redis.asyncio as aioredis

from quota import QuotaStore
from relay.clock import FakeClock
from relay.config import DeliverySettings, DnsSettings
from relay.delivery.dane import DaneValidator, parse_anchors
from relay.delivery.dns_cache import DnsCache
from relay.delivery.egress_state import EgressState, egress_state
from relay.delivery.mta_sts import MtaStsPolicies
from relay.delivery.mx import make_resolver
from relay.delivery.rates import FleetGate
from relay.delivery.shaping_source import ShapingSource
from relay.delivery.tls_policy import verifying_context
from relay.delivery.tls_report import TlsReports
from relay.delivery.worker import DeliveryWorker
from relay.events import EventRecorder
from relay.queue import DsnRequest, Envelope, QueueStore
from relay.sink import Received, Sink
from tests.support.spool import temp_spool

SENDER = "alice@sender.test"
POOL = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]
BODY = (
    b"From: Alice <alice@sender.test>\r\nTo: bob@dest.test\r\nSubject: engine test\r\n"
    b"Message-ID: <original-1@sender.test>\r\n\r\nHello Bob.\r\n"
)


@dataclass
class Engine:
    queue: QueueStore
    worker: DeliveryWorker
    egress: EgressState
    clock: FakeClock
    settings: DeliverySettings

    async def submit(
        self,
        *recipients: str,
        sender: str = SENDER,
        body: bytes = BODY,
        account: str = "alice",
        dsn: DsnRequest | None = None,
        sender_verified: bool = True,
    ) -> str:
        envelope = Envelope(sender, recipients, account, dsn or DsnRequest(), sender_verified)
        return await self.queue.enqueue(envelope, body)

    async def step(self, seconds: float = 0.0) -> int:
        """Move the clock, then attempt whatever is due (and the notices that queues)."""
        self.clock.advance(seconds)
        return await self.worker.run_due()

    async def run_until_empty(self, step: float, max_steps: int) -> int:
        """Steps of `step` seconds until the queue is empty; the number of steps taken."""
        await self.worker.run_due()
        for n in range(max_steps):
            if await self.queue.count() == 0:
                return n
            await self.step(step)
        raise AssertionError(f"queue not empty after {max_steps} steps")


def delivery_settings(**overrides: object) -> DeliverySettings:
    values: dict[str, object] = {
        "egress": [{"ip": ip, "helo": f"out{ip.rsplit('.', 1)[1]}.relay.test"} for ip in POOL],
        "workers": 8,
        "timeouts": {"connect": "2s", "command": "5s", "data": "5s"},
        "allow_private_destinations": True,  # the test MX hosts are on 127.0.0.x
    }
    values.update(overrides)
    return DeliverySettings(**values)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def engine(
    redis: aioredis.Redis,
    clock: FakeClock,
    *,
    dns: DnsSettings | None = None,
    queue: QueueStore | None = None,
    quota: QuotaStore | None = None,
    events: EventRecorder | None = None,
    dns_cache: DnsCache | None = None,
    **overrides: object,
) -> AsyncIterator[Engine]:
    """`queue`: another engine's, for two workers (as two processes) on one queue;
    `quota`: charge notices to the sender's account (None: not charged); `events`: record
    the application's events (None: none)."""
    settings = delivery_settings(**overrides)
    queue = queue or QueueStore(redis, clock, temp_spool())
    state = egress_state(redis, clock, settings)
    resolver = make_resolver(dns or DnsSettings(servers=["127.0.0.1:9"]), cache=dns_cache)
    ca_file = str(settings.tls_ca_file) if settings.tls_ca_file else ""
    worker = DeliveryWorker(
        queue=queue,
        settings=settings,
        resolver=resolver,
        clock=clock,
        egress_state=state,
        hostname="relay.test",
        quota=quota,
        events=events,
        shaping=ShapingSource(settings, redis),
        gate=FleetGate(redis, lease=60),
        mta_sts=MtaStsPolicies(
            resolver, clock, context=verifying_context(ca_file), port=settings.mta_sts_port
        )
        if settings.mta_sts
        else None,
        tls_reports=TlsReports(redis),
        dane=DaneValidator(
            make_resolver(dns, cache=DnsCache(clock)), clock, parse_anchors(dns.trust_anchors)
        )
        if dns is not None and dns.trust_anchors
        else None,
    )
    try:
        yield Engine(queue, worker, state, clock, settings)
    finally:
        await worker.close()


@contextlib.asynccontextmanager
async def sink_on(sink: Sink, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Serve `sink`; yields its "host:port"."""
    async with sink.serving(host, port) as server:
        yield f"{host}:{server.sockets[0].getsockname()[1]}"


def parse(received: Received) -> email.message.EmailMessage:
    message = email.message_from_bytes(received.data, policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return message


def report_fields(notice: Received) -> list[dict[str, str]]:
    """The per-message block, then one block per recipient, of a DSN's delivery-status part."""
    message = parse(notice)
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "delivery-status"
    parts = list(message.iter_parts())
    status = next(
        p for p in parts if p.get_content_type().endswith("delivery-status")
    ).get_payload()
    blocks = []
    for block in status:  # email parses message/delivery-status into header blocks
        blocks.append({k.lower(): str(v) for k, v in block.items()})
    return blocks
