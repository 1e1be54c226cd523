"""Submission end to end over real TLS sockets, with the real queue in a real Redis."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import aiosmtplib
import pytest

from relay.redis_client import connect
from tests.conftest import PASSWORD, add_sender, free_port
from tests.support.submission import Stack, client, start_stack

ENHANCED = r"^[245]\.\d{1,3}\.\d{1,3} "


@pytest.fixture
async def stack(redis, clock, server_cert, ca) -> AsyncIterator[Stack]:
    await add_sender(redis)
    stack, servers = await start_stack(
        redis, clock, server_cert, ca, max_message_size=10_000, max_recipients=3
    )
    yield stack
    for server in servers:
        server.close()
        await server.wait_closed()


MESSAGE = b"From: alice@example.org\r\nTo: bob@example.com\r\nSubject: hi\r\n\r\nHello Bob.\r\n"


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "implicit"])
@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_authenticated_message_is_queued_intact(stack, implicit, mechanism):
    async with client(stack, implicit=implicit) as smtp:
        await smtp.ehlo()
        auth = smtp.auth_plain if mechanism == "PLAIN" else smtp.auth_login
        await auth("alice", PASSWORD)
        _, reply = await smtp.sendmail("alice@example.org", ["bob@example.com"], MESSAGE)
    assert reply.startswith("2.0.0 Queued as ")
    queue_id = reply.split()[-1]
    stored = await stack.queue.load(queue_id)
    assert stored.meta.account == "alice" and stored.meta.recipients == ("bob@example.com",)
    assert stored.body.endswith(MESSAGE)
    assert stored.body.startswith(b"Received: from ")
    assert b"with ESMTPSA id " + queue_id.encode() in stored.body
    assert f"Message-ID: <{queue_id}@relay.test>".encode() in stored.body


async def test_auth_is_not_offered_before_starttls(stack):
    async with client(stack, starttls=False) as smtp:
        await smtp.ehlo()
        assert "auth" not in smtp.esmtp_extensions and "starttls" in smtp.esmtp_extensions
        for extension in ("size", "8bitmime", "smtputf8", "enhancedstatuscodes"):
            assert extension in smtp.esmtp_extensions
        reply = await smtp.execute_command(b"AUTH", b"PLAIN", _plain("alice", PASSWORD))
        assert reply.code == 530 and reply.message.startswith("5.7.0")
        reply = await smtp.execute_command(b"MAIL", b"FROM:<a@example.org>")
        assert reply.code == 530 and reply.message.startswith("5.7.0")


async def test_mail_before_auth_is_refused(stack):
    for implicit in (False, True):
        async with client(stack, implicit=implicit) as smtp:
            await smtp.ehlo()
            reply = await smtp.execute_command(b"MAIL", b"FROM:<a@example.org>")
            assert (reply.code, reply.message) == (530, "5.7.0 Authentication required")
            reply = await smtp.execute_command(b"RCPT", b"TO:<b@example.com>")
            assert reply.code == 530


@pytest.mark.parametrize("login,password", [("alice", "wrong password"), ("nobody", PASSWORD)])
async def test_wrong_password_and_unknown_login_get_the_same_535(stack, login, password):
    async with client(stack, implicit=True) as smtp:
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as caught:
            await smtp.login(login, password)
        assert caught.value.code == 535
        assert caught.value.message == "5.7.8 Authentication credentials invalid"
        reply = await smtp.execute_command(b"MAIL", b"FROM:<a@example.org>")
        assert reply.code == 530, "a failed AUTH must not open the relay"


async def test_size_limits(stack):
    async with client(stack) as smtp:
        await smtp.login("alice", PASSWORD)
        reply = await smtp.execute_command(b"MAIL", b"FROM:<a@example.org> SIZE=20000")
        assert reply.code == 552 and reply.message.startswith("5.3.4")
        await smtp.mail("a@example.org")
        await smtp.rcpt("b@example.com")
        with pytest.raises(aiosmtplib.SMTPDataError) as caught:
            await smtp.data(MESSAGE + (b"x" * 70 + b"\r\n") * 300)
        assert caught.value.code == 552 and caught.value.message.startswith("5.3.4")
    assert await stack.queue.count() == 0


async def test_too_many_recipients(stack):
    async with client(stack) as smtp:
        await smtp.login("alice", PASSWORD)
        await smtp.mail("a@example.org")
        for n in range(3):
            await smtp.rcpt(f"r{n}@example.com")
        reply = await smtp.execute_command(b"RCPT", b"TO:<r3@example.com>")
        assert reply.code == 452 and reply.message.startswith("4.5.3 Too many recipients")


async def test_bad_syntax_gets_enhanced_5xx(stack):
    async with client(stack) as smtp:
        await smtp.login("alice", PASSWORD)
        for command, args, code in [
            (b"MAIL", b"FROM:", 501),
            (b"MAIL", b"FROM:<not an address", 501),
            (b"MAIL", b"FROM:<no-domain>", 501),
            (b"MAIL", b"FROM:<", 553),
            (b"BOGUS", b"", 500),
        ]:
            reply = await smtp.execute_command(command, *([args] if args else []))
            assert reply.code == code, (command, args, reply)
            assert __import__("re").match(ENHANCED, reply.message), reply.message
        await smtp.mail("a@example.org")
        reply = await smtp.execute_command(b"RCPT", b"TO:<postmaster>")
        assert reply.code == 501 and reply.message.startswith("5.1.3")


async def test_null_sender_is_accepted_and_stored_as_empty(stack):
    async with client(stack) as smtp:
        await smtp.login("alice", PASSWORD)
        reply = await smtp.execute_command(b"MAIL", b"FROM:<>")
        assert reply.code == 250
        await smtp.rcpt("b@example.com")
        response = await smtp.data(MESSAGE)
    stored = await stack.queue.load(response.message.split()[-1])
    assert stored.meta.mail_from == ""


async def test_redis_down_at_data_gives_451_never_250(redis, clock, server_cert, ca):
    await add_sender(redis)
    dead = connect(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    stack, servers = await start_stack(redis, clock, server_cert, ca, redis_client=dead)
    try:
        async with client(stack) as smtp:
            await smtp.login("alice", PASSWORD)
            await smtp.mail("a@example.org")
            await smtp.rcpt("b@example.com")
            with pytest.raises(aiosmtplib.SMTPDataError) as caught:
                await smtp.data(MESSAGE)
            assert caught.value.code == 451 and caught.value.message.startswith("4.3.0")
    finally:
        await dead.aclose()
        for server in servers:
            server.close()


def _plain(login: str, password: str) -> bytes:
    return base64.b64encode(f"\0{login}\0{password}".encode())


async def test_auth_edge_cases_get_clear_replies(stack):
    async with client(stack) as smtp:
        await smtp.ehlo()
        reply = await smtp.execute_command(b"AUTH", b"PLAIN", b"not-base64!")
        assert (reply.code, reply.message[:5]) == (501, "5.5.2")
        reply = await smtp.execute_command(b"AUTH", b"PLAIN", base64.b64encode(b"no-nuls"))
        assert (reply.code, reply.message[:5]) == (501, "5.5.2")
        reply = await smtp.execute_command(b"AUTH", b"CRAM-MD5")
        assert (reply.code, reply.message[:5]) == (504, "5.5.4")
        reply = await smtp.execute_command(b"AUTH", b"LOGIN")
        assert reply.code == 334
        reply = await smtp.execute_command(b"*")
        assert reply.code == 501 and reply.message.startswith("5.")
        reply = await smtp.execute_command(b"AUTH", b"LOGIN", base64.b64encode(b"alice"))
        assert reply.code == 334
        reply = await smtp.execute_command(base64.b64encode(PASSWORD.encode()))
        assert (reply.code, reply.message) == (235, "2.7.0 Authentication successful")
        reply = await smtp.execute_command(b"AUTH", b"PLAIN", _plain("alice", PASSWORD))
        assert (reply.code, reply.message[:5]) == (503, "5.5.1")
        for command in (b"NOOP", b"RSET"):
            reply = await smtp.execute_command(command)
            assert reply.code == 250 and reply.message.startswith("2.0.0")


async def test_over_long_lines_are_refused_and_the_session_goes_on(stack):
    async with client(stack) as smtp:
        await smtp.login("alice", PASSWORD)
        reply = await smtp.execute_command(b"NOOP", b"x" * 5000)
        assert (reply.code, reply.message[:5]) == (500, "5.5.2")
        await smtp.mail("a@example.org")
        await smtp.rcpt("b@example.com")
        with pytest.raises(aiosmtplib.SMTPDataError) as caught:
            await smtp.data(b"Subject: long\r\n\r\n" + b"y" * 20_000 + b"\r\n")
        assert (caught.value.code, caught.value.message[:5]) == (500, "5.5.2")
        _, reply = await smtp.sendmail("a@example.org", ["b@example.com"], MESSAGE)
        assert reply.startswith("2.0.0 Queued")
    assert await stack.queue.count() == 1


async def test_client_vanishing_mid_data_queues_nothing(stack):
    async with client(stack, implicit=True) as smtp:
        await smtp.login("alice", PASSWORD)
        await smtp.mail("a@example.org")
        await smtp.rcpt("b@example.com")
        await smtp.execute_command(b"DATA")
        smtp.transport.write(b"Subject: half\r\n\r\nhalf a message")  # no final dot
        smtp.close()
    async with client(stack) as smtp:  # the server still serves others
        await smtp.login("alice", PASSWORD)
        await smtp.sendmail("a@example.org", ["b@example.com"], MESSAGE)
    assert await stack.queue.count() == 1
