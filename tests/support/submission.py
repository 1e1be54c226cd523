"""A submission server over real TLS sockets, wired to the real queue and quota in Redis."""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import aiosmtplib

from quota import QuotaStore
from relay.accounts import AccountStore
from relay.config import HostPort, Listener, SubmissionSettings
from relay.queue import QueueStore
from relay.submission.server import start_listeners
from relay.submission.service import SubmissionService
from relay.tls import server_context
from tests.conftest import free_port
from tests.support.spool import temp_spool


@dataclass
class Stack:
    starttls_port: int
    implicit_port: int
    queue: QueueStore
    quota: QuotaStore
    client_tls: ssl.SSLContext


async def start_stack(
    redis,
    clock,
    server_cert,
    ca,
    redis_client=None,
    quota_client=None,
    per_minute=1000,
    content_check=None,
    draining=None,
    **limits,
) -> tuple:
    """`redis_client` / `quota_client`: another Redis for the queue / the quota (e.g. a dead
    one); both default to `redis`."""
    accounts = AccountStore(redis, clock)
    quota = QuotaStore(quota_client or redis, default_per_minute=per_minute, per_recipient=100)
    queue = QueueStore(redis_client or redis, clock, temp_spool())
    settings = SubmissionSettings(**limits)
    service = SubmissionService(
        accounts=accounts,
        queue=queue,
        quota=quota,
        settings=settings,
        hostname="relay.test",
        clock=clock,
        store_timeout=1.0,
        content_check=content_check,
        draining=draining,
    )
    listeners = [
        Listener(address=HostPort(host="127.0.0.1", port=free_port()), tls="starttls"),
        Listener(address=HostPort(host="127.0.0.1", port=free_port()), tls="implicit"),
    ]
    servers = await start_listeners(
        listeners=listeners,
        settings=settings,
        service=service,
        tls=server_context(*server_cert),
        hostname="relay.test",
        draining=draining,
    )
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)
    stack = Stack(listeners[0].address.port, listeners[1].address.port, queue, quota, client_tls)
    return stack, servers


def client(stack: Stack, *, implicit: bool = False, starttls: bool = True) -> aiosmtplib.SMTP:
    return aiosmtplib.SMTP(
        hostname="127.0.0.1",
        port=stack.implicit_port if implicit else stack.starttls_port,
        use_tls=implicit,
        start_tls=starttls if not implicit else False,
        tls_context=stack.client_tls,
        timeout=10,
    )
