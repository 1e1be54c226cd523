"""The whole path, in-process: AUTH over TLS → Redis queue → delivery from an egress IP."""

from __future__ import annotations

import asyncio
import ssl

import aiosmtplib
import pytest

from relay.app import serve
from relay.config import Settings
from relay.queue import QueueStore
from relay.sink import Sink
from tests.conftest import PASSWORD, add_sender, free_port
from tests.support.dns_server import DnsServer
from tests.support.redis_fleet import on_cluster
from tests.support.spool import temp_spool

EGRESS = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]
MESSAGE = (
    b"From: alice@example.org\r\nTo: bob@example.com\r\nSubject: end to end\r\n\r\n"
    b"First line.\r\n.leading dot\r\n\xc3\xa9t\xc3\xa9 8-bit\r\n"
)


def relay_settings(redis_url, server_cert, dns: DnsServer, **delivery) -> Settings:
    cert, key = server_cert
    return Settings(
        hostname="relay.test",
        redis={"cluster_nodes": [redis_url]} if on_cluster() else {"url": redis_url},
        tls={"cert": cert, "key": key},
        submission={
            "listeners": [
                {"address": f"127.0.0.1:{free_port()}", "tls": "starttls"},
                {"address": f"127.0.0.1:{free_port()}", "tls": "implicit"},
            ]
        },
        delivery={
            "egress": [{"ip": ip, "helo": f"out{n}.relay.test"} for n, ip in enumerate(EGRESS)],
            "poll_interval": "50ms",
            "retry_interval": "1s",
            "timeouts": {"connect": "2s", "command": "5s", "data": "5s"},
            "allow_private_destinations": True,  # the test MX hosts are on 127.0.0.x
            **delivery,
        },
        dns={"servers": [f"127.0.0.1:{dns.port}"], "timeout": "2s"},
        spool={"dir": temp_spool().root},
    )


async def run_relay(settings: Settings) -> tuple[asyncio.Task[None], asyncio.Event]:
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop=stop))
    port = settings.submission.listeners[0].address.port
    for _ in range(200):  # until the listener answers
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            await writer.wait_closed()
            return task, stop
        except OSError:
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
    raise TimeoutError("relay did not start")


async def submit(settings: Settings, ca, listener: int, rcpts: list[str]) -> str:
    address = settings.submission.listeners[listener].address
    implicit = settings.submission.listeners[listener].tls == "implicit"
    context = ssl.create_default_context()
    ca.configure_trust(context)
    async with aiosmtplib.SMTP(
        hostname="127.0.0.1",
        port=address.port,
        use_tls=implicit,
        start_tls=not implicit,
        tls_context=context,
        timeout=10,
    ) as smtp:
        await smtp.login("alice", PASSWORD)
        _, reply = await smtp.sendmail("alice@example.org", rcpts, MESSAGE)
    return reply.split()[-1]


@pytest.mark.parametrize("listener", [0, 1], ids=["starttls", "implicit"])
async def test_message_goes_through_static_route(
    redis, redis_server, clock, server_cert, ca, dns, sink, listener
):
    received, port = sink
    await add_sender(redis)
    settings = relay_settings(redis_server.url, server_cert, dns, routes={"*": f"127.0.0.1:{port}"})
    task, stop = await run_relay(settings)
    try:
        queue_id = await submit(settings, ca, listener, ["bob@example.com", "carol@example.net"])
        messages = await received.wait_for(2, timeout=10)
    finally:
        stop.set()
        await task
    assert sorted(r for m in messages for r in m.rcpt_tos) == [
        "bob@example.com",
        "carol@example.net",
    ]
    for message in messages:
        assert message.data.endswith(MESSAGE), "the body must arrive byte for byte"
        assert message.peer in EGRESS
        assert message.helo == f"out{EGRESS.index(message.peer)}.relay.test"
        assert message.mail_from == "alice@example.org"
        assert f"id {queue_id}".encode() in message.data
    queue = QueueStore.from_settings(redis, clock, settings)
    assert await queue.count() == 0, "delivered mail leaves the queue"
    assert not list(queue.spool.entries()), "and its body leaves the spool"


async def test_mx_lookup_path(redis, redis_server, clock, server_cert, ca, dns, sink):
    received, port = sink
    dns.load(
        "example.com. MX 10 mx1.example.com.\n"
        "example.com. MX 20 mx2.example.com.\n"
        "mx1.example.com. A 127.0.0.1\n"
        "mx2.example.com. A 127.0.0.1\n"
    )
    await add_sender(redis)
    settings = relay_settings(redis_server.url, server_cert, dns, mx_port=port)
    task, stop = await run_relay(settings)
    try:
        await submit(settings, ca, 0, ["bob@example.com"])
        (message,) = await received.wait_for(1, timeout=10)
    finally:
        stop.set()
        await task
    assert message.rcpt_tos == ("bob@example.com",) and message.data.endswith(MESSAGE)
    assert ("example.com.", "MX") in dns.queries


async def test_transient_failure_is_retried_after_the_interval(
    redis, redis_server, clock, server_cert, ca, dns
):
    attempts: list[str] = []

    def refuse_first(peer: str, rcpt: str) -> str | None:
        attempts.append(peer)
        return "451 4.3.0 try again later" if len(attempts) == 1 else None

    sink = Sink(reply_for_rcpt=refuse_first)
    await add_sender(redis)
    async with sink.serving() as server:
        port = server.sockets[0].getsockname()[1]
        settings = relay_settings(
            redis_server.url, server_cert, dns, routes={"*": f"127.0.0.1:{port}"}
        )
        task, stop = await run_relay(settings)
        try:
            queue_id = await submit(settings, ca, 0, ["bob@example.com"])
            await asyncio.sleep(0.3)
            assert sink.count == 0 and len(attempts) == 1
            (job,) = await QueueStore.from_settings(redis, clock, settings).jobs_of(queue_id)
            assert job.attempts == 1 and job.last_error is not None
            assert (job.last_error.code, job.last_error.status) == (451, "4.3.0")
            await sink.wait_for(1, timeout=10)
        finally:
            stop.set()
            await task
    assert len(attempts) == 2


async def test_permanent_failure_leaves_the_queue(redis, redis_server, clock, server_cert, ca, dns):
    sink = Sink(reply_for_rcpt=lambda peer, rcpt: "550 5.1.1 no such user")
    await add_sender(redis)
    async with sink.serving() as server:
        port = server.sockets[0].getsockname()[1]
        settings = relay_settings(
            redis_server.url, server_cert, dns, routes={"*": f"127.0.0.1:{port}"}
        )
        task, stop = await run_relay(settings)
        queue = QueueStore.from_settings(redis, clock, settings)
        try:
            await submit(settings, ca, 0, ["nobody@example.com"])
            for _ in range(200):
                if await queue.count() == 0:
                    break
                await asyncio.sleep(0.02)
        finally:
            stop.set()
            await task
    assert await queue.count() == 0 and sink.count == 0
