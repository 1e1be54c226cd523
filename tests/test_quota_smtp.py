"""Quotas as a customer meets them: through SMTP, with the fake clock moving the window."""

from __future__ import annotations

import asyncio
import re

import aiosmtplib
import pytest

from quota import Plan
from relay.redis_client import connect
from tests.conftest import PASSWORD, add_sender, free_port
from tests.support.submission import client, start_stack

MESSAGE = b"Subject: quota\r\n\r\nbody\r\n"


@pytest.fixture
async def stack(redis, clock, server_cert, ca):
    await add_sender(redis, daily=3, per_minute=1000)
    stack, servers = await start_stack(redis, clock, server_cert, ca, max_message_size=10_000)
    yield stack
    for server in servers:
        server.close()
        await server.wait_closed()


async def rcpt(smtp, address: str):
    return await smtp.execute_command(b"RCPT", f"TO:<{address}>".encode())


async def test_over_quota_is_452_with_the_next_slot_then_frees_itself(stack, clock):
    async with client(stack) as smtp:
        await smtp.login("alice", PASSWORD)
        await smtp.sendmail("a@example.org", ["r1@example.com", "r2@example.com"], MESSAGE)
        clock.advance(3600)
        await smtp.mail("a@example.org")
        assert (await rcpt(smtp, "r3@example.com")).code == 250
        refused = await rcpt(smtp, "r4@example.com")
        assert refused.code == 452 and refused.message.startswith("4.7.1 Daily quota 3 reached")
        # the first two were sent in the minute of clock start: free 24 h + 1 min later
        assert re.search(r"next free slot at \d\d:\d\d:\d\dZ \(in 23h01m\)", refused.message)
        response = await smtp.data(MESSAGE)
        assert response.code == 250, "the recipients accepted before the limit are sent"
    usage = await stack.quota.usage("alice", clock.now())
    assert (usage.used, usage.state) == (3, "suspended (quota)")

    clock.advance(23 * 3600 + 60)  # the first minute has left the window: two slots free
    async with client(stack) as smtp:
        await smtp.login("alice", PASSWORD)
        _, reply = await smtp.sendmail("a@example.org", ["r5@example.com"], MESSAGE)
        assert reply.startswith("2.0.0 Queued")
    assert (await stack.quota.usage("alice", clock.now())).state == "active"


async def wait_used(stack, clock, expected: int) -> None:
    for _ in range(200):
        if (await stack.quota.usage("alice", clock.now())).used == expected:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"usage never came back to {expected}")


async def test_unfinished_transactions_give_their_reservations_back(stack, clock):
    async with client(stack) as smtp:
        await smtp.login("alice", PASSWORD)
        await smtp.mail("a@example.org")
        await smtp.rcpt("r1@example.com")
        await smtp.rcpt("r2@example.com")
        assert (await stack.quota.usage("alice", clock.now())).used == 2
        await smtp.rset()
        await wait_used(stack, clock, 0)

        await smtp.mail("a@example.org")
        await smtp.rcpt("r1@example.com")
        with pytest.raises(aiosmtplib.SMTPDataError):
            await smtp.data(MESSAGE + (b"x" * 70 + b"\r\n") * 300)  # too big: 552
        await wait_used(stack, clock, 0)

        await smtp.mail("a@example.org")
        await smtp.rcpt("r1@example.com")
        await smtp.ehlo()
        await wait_used(stack, clock, 0)

        await smtp.mail("a@example.org")
        await smtp.rcpt("r1@example.com")
        await smtp.rcpt("r2@example.com")
    # QUIT with a transaction open
    await wait_used(stack, clock, 0)

    smtp = client(stack, implicit=True)
    await smtp.connect()
    await smtp.login("alice", PASSWORD)
    await smtp.mail("a@example.org")
    await smtp.rcpt("r1@example.com")
    smtp.close()  # the client vanishes
    await wait_used(stack, clock, 0)
    assert await stack.queue.count() == 0


async def test_expired_plan_is_550(redis, clock, server_cert, ca):
    await add_sender(redis, daily=5)
    stack, servers = await start_stack(redis, clock, server_cert, ca)
    await stack.quota.remove_plan("alice", "test")
    await stack.quota.add_plan("alice", Plan("old", daily=5, expires=clock.now() - 1))
    try:
        async with client(stack) as smtp:
            await smtp.login("alice", PASSWORD)
            await smtp.mail("a@example.org")
            reply = await rcpt(smtp, "r1@example.com")
            assert reply.code == 550 and reply.message.startswith(
                "5.7.1 Account suspended (expired)"
            )
    finally:
        for server in servers:
            server.close()


async def test_per_minute_and_per_recipient_limits(redis, clock, server_cert, ca):
    await add_sender(redis, daily=1000, per_minute=4)
    stack, servers = await start_stack(redis, clock, server_cert, ca, per_minute=4)
    try:
        async with client(stack) as smtp:
            await smtp.login("alice", PASSWORD)
            await smtp.mail("a@example.org")
            for n in range(4):
                assert (await rcpt(smtp, f"r{n}@example.com")).code == 250
            refused = await rcpt(smtp, "r9@example.com")
            assert refused.code == 451 and refused.message.startswith(
                "4.7.1 Rate limit of 4 recipients per minute reached; retry at "
            )
            assert refused.message.endswith("(in 1m01s)")
            await smtp.data(MESSAGE)
        clock.advance(61)
        await stack.quota.add_plan("alice", Plan("more", daily=1000, per_minute=1000))
        async with client(stack) as smtp:
            await smtp.login("alice", PASSWORD)
            for _ in range(100):
                await smtp.sendmail("a@example.org", ["same@example.com"], MESSAGE)
            await smtp.mail("a@example.org")
            refused = await rcpt(smtp, "Same@example.com")
            assert refused.code == 451
            assert "Limit of 100 messages per minute to Same@example.com" in refused.message
    finally:
        for server in servers:
            server.close()


async def test_quota_store_down_is_451_never_an_unchecked_accept(redis, clock, server_cert, ca):
    await add_sender(redis)
    dead = connect(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    stack, servers = await start_stack(redis, clock, server_cert, ca, quota_client=dead)
    try:
        async with client(stack) as smtp:
            await smtp.login("alice", PASSWORD)
            await smtp.mail("a@example.org")
            reply = await rcpt(smtp, "r1@example.com")
            assert (reply.code, reply.message[:5]) == (451, "4.3.0")
    finally:
        await dead.aclose()
        for server in servers:
            server.close()


async def test_fifty_concurrent_sessions_never_overshoot(redis, clock, server_cert, ca):
    await add_sender(redis, daily=60)
    stack, servers = await start_stack(redis, clock, server_cert, ca)

    async def session(n: int) -> int:
        accepted = 0
        async with client(stack, implicit=True) as smtp:
            await smtp.login("alice", PASSWORD)
            for m in range(2):
                await smtp.mail("a@example.org")
                ok = [(await rcpt(smtp, f"r{n}.{m}.{i}@example.com")).code == 250 for i in range(2)]
                if any(ok):
                    await smtp.data(MESSAGE)
                    accepted += sum(ok)
                else:
                    await smtp.rset()
        return accepted

    try:
        accepted = sum(await asyncio.gather(*(session(n) for n in range(50))))
    finally:
        for server in servers:
            server.close()
    assert accepted == 60
    assert (await stack.quota.usage("alice", clock.now())).used == 60
    messages = await stack.queue.list_messages(limit=1000)
    assert sum(len(m.recipients) for m in messages) == 60
