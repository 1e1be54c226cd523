"""Hostile SMTP input: the server answers or hangs up cleanly, keeps serving others, and holds
a bounded amount of memory whatever a client sends."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import struct
import threading
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.clock import SystemClock
from relay.redis_client import connect
from tests.conftest import PASSWORD, add_sender
from tests.support.guarded import REPLY_LINE, RawClient, guarded_stack

MESSAGE = b"From: alice@example.org\r\nSubject: hello\r\n\r\nHello.\r\n"


@pytest.fixture
async def stack(redis, clock, server_cert, ca):
    await add_sender(redis)
    async with guarded_stack(redis, clock, server_cert, ca, max_message_size=1_000_000) as stack:
        yield stack


@pytest.fixture
async def impatient(redis, clock, server_cert, ca):
    """Short per-phase timeouts, so that slow clients are dealt with in seconds."""
    await add_sender(redis)
    async with guarded_stack(
        redis,
        clock,
        server_cert,
        ca,
        timeouts={"command": "2s", "data": "3s", "tls_handshake": "1s"},
    ) as stack:
        yield stack


async def authenticated(stack, source: str = "127.0.0.1") -> RawClient:
    client = await RawClient.connect(stack.implicit_port, tls=stack.client_tls, source=source)
    assert (await client.reply())[0] == 220
    assert (await client.command(b"EHLO client.test"))[0] == 250
    assert (await client.login("alice", PASSWORD))[0] == 235
    return client


async def send_one(stack, body: bytes = MESSAGE) -> str:
    """A well-behaved client's whole transaction; the queue id."""
    client = await authenticated(stack, source="127.0.0.99")
    try:
        assert (await client.command(b"MAIL FROM:<alice@example.org>"))[0] == 250
        assert (await client.command(b"RCPT TO:<bob@example.com>"))[0] == 250
        assert (await client.command(b"DATA"))[0] == 354
        await client.send(body)
        code, text = await client.command(b".")
        assert code == 250, text
        return text.split()[-1]
    finally:
        await client.close()


async def test_a_1mb_command_line_is_refused_and_the_session_goes_on(stack):
    client = await authenticated(stack)
    try:
        assert await client.command(b"NOOP " + b"x" * 1_000_000) == (500, "5.5.2 Line too long")
        assert await client.command(b"MAIL FROM:<" + b"a" * 1_000_000 + b"@x.y>") == (
            500,
            "5.5.2 Line too long",
        )
        assert (await client.command(b"NOOP"))[0] == 250
        # The same inside the AUTH exchange (a line the server reads by itself).
        other = await RawClient.connect(stack.implicit_port, tls=stack.client_tls)
        await other.reply()
        await other.command(b"EHLO client.test")
        assert (await other.command(b"AUTH LOGIN"))[0] == 334
        code, _ = await other.command(b"y" * 1_000_000)
        assert code in (500, 501)
        assert (await other.command(b"NOOP"))[0] in (250, 421)
        await other.close()
    finally:
        await client.close()
    await send_one(stack)


async def test_commands_after_a_message_keep_their_line_limit(stack):
    """DATA is read in pieces far longer than a command may be; the limit comes back after."""
    client = await authenticated(stack)
    try:
        for limit_hit in (False, True):
            await client.command(b"MAIL FROM:<alice@example.org>")
            await client.command(b"RCPT TO:<bob@example.com>")
            assert (await client.command(b"DATA"))[0] == 354
            await client.send(MESSAGE + (b"y" * 9000 + b"\r\n" if limit_hit else b""))
            reply = await client.command(b".")
            assert reply[0] == (500 if limit_hit else 250), reply
            assert await client.command(b"NOOP " + b"x" * 9000) == (500, "5.5.2 Line too long")
    finally:
        await client.close()


async def test_a_1mb_line_in_data_fails_the_message_not_the_session(stack):
    client = await authenticated(stack)
    try:
        await client.command(b"MAIL FROM:<alice@example.org>")
        await client.command(b"RCPT TO:<bob@example.com>")
        assert (await client.command(b"DATA"))[0] == 354
        await client.send(b"Subject: long\r\n\r\n" + b"z" * 1_000_000 + b"\r\n")
        assert await client.command(b".") == (500, "5.5.2 Line too long")
        assert (await client.command(b"NOOP"))[0] == 250
    finally:
        await client.close()
    assert await stack.queue.count() == 0


async def test_nul_bytes_get_replies_and_a_body_keeps_them(stack):
    client = await authenticated(stack)
    try:
        for line in (b"\x00\x00\x00", b"NO\x00OP", b"EHLO a\x00b", b"MAIL FROM:<a\x00b@x.y>"):
            code, text = await client.command(line)
            assert 500 <= code < 600 or code == 250, (line, code, text)
        assert (await client.command(b"RSET"))[0] == 250
        await client.command(b"MAIL FROM:<alice@example.org>")
        assert (await client.command(b"RCPT TO:<bob\x00@example.com>"))[0] >= 500
        assert (await client.command(b"RCPT TO:<bob@example.com>"))[0] == 250
        assert (await client.command(b"DATA"))[0] == 354
        await client.send(b"Subject: nul\r\n\r\nbefore\x00after\r\n")
        code, text = await client.command(b".")
        assert code == 250
    finally:
        await client.close()
    stored = await stack.queue.load(text.split()[-1])
    assert stored.body.endswith(b"before\x00after\r\n"), "the body is kept byte for byte"


SMUGGLING = [
    b"\n.\n",
    b"\n.\r\n",
    b"\r\n.\n",
    b"\r.\r",
    b"\r\n.\r",
]


@pytest.mark.parametrize("end", SMUGGLING, ids=repr)
async def test_bare_line_ends_never_end_the_data(stack, end):
    """SMTP smuggling: only CRLF.CRLF ends a message; what follows a bare one stays body."""
    smuggled = (
        b"MAIL FROM:<ceo@bank.example>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\n"
        b"Subject: smuggled\r\n\r\nwire money\r\n"
    )
    client = await authenticated(stack)
    try:
        await client.command(b"MAIL FROM:<alice@example.org>")
        await client.command(b"RCPT TO:<bob@example.com>")
        assert (await client.command(b"DATA"))[0] == 354
        await client.send(b"Subject: innocent\r\n\r\nhello" + end + smuggled)
        code, text = await client.command(b".")
        assert code == 250
        assert await client.command(b"NOOP") == (250, "2.0.0 OK"), "no reply was left over"
    finally:
        await client.close()
    assert await stack.queue.count() == 1
    stored = await stack.queue.load(text.split()[-1])
    assert stored.meta.recipients == ("bob@example.com",)
    # One message, the smuggled commands inside its body (a data line that starts with a dot
    # loses that dot: RFC 5321 transparency). Delivery normalises line ends to CRLF and then
    # dot-stuffs (aiosmtplib), so the next hop sees one message too.
    assert stored.body.endswith(smuggled)
    assert b"Subject: innocent\r\n\r\nhello" in stored.body


async def test_commands_may_end_with_a_bare_lf(stack):
    client = await authenticated(stack)
    try:
        await client.send(b"NOOP\nRSET\n")
        assert [await client.reply(), await client.reply()] == [(250, "2.0.0 OK")] * 2
    finally:
        await client.close()


async def test_pipelined_garbage_gets_a_reply_per_line_then_a_hangup(stack):
    garbage = [
        bytes([(n * 37 + k) % 256 for k in range(40)]).replace(b"\n", b"") for n in range(50)
    ]
    client = await RawClient.connect(stack.implicit_port, tls=stack.client_tls)
    try:
        assert (await client.reply())[0] == 220
        await client.send(b"".join(line + b"\r\n" for line in garbage))
        rest = await client.closed()
    finally:
        await client.close()
    lines = rest.splitlines()
    assert lines and all(REPLY_LINE.match(line) for line in lines), rest[:500]
    assert all(line[:1] == b"5" for line in lines)
    assert lines[-1].startswith(b"502 5.5.1 Too many unrecognized commands")
    await send_one(stack)


async def test_a_client_resetting_mid_data_queues_nothing(stack):
    client = await authenticated(stack)
    await client.command(b"MAIL FROM:<alice@example.org>")
    await client.command(b"RCPT TO:<bob@example.com>")
    assert (await client.command(b"DATA"))[0] == 354
    await client.send(b"Subject: half\r\n\r\n" + b"half a message\r\n" * 1000)
    sock = client.writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.writer.transport.abort()  # RST, not a polite FIN
    await send_one(stack)
    assert await stack.queue.count() == 1


async def test_a_slow_client_is_cut_off_at_the_command_timeout(impatient):
    """One byte per second never completes a command before the 2 s command timeout."""
    client = await authenticated(impatient)
    try:
        with contextlib.suppress(ConnectionError, OSError):
            for byte in b"NOOP\r\n":
                await client.send(bytes([byte]))
                await asyncio.sleep(1.0)
        assert await client.reply() == (421, "4.4.2 Timeout, closing connection")
        assert await client.closed() == b""
    finally:
        await client.close()


async def test_a_slow_data_transfer_is_cut_off_at_the_data_timeout(impatient):
    """The DATA timeout bounds the whole transfer, not the gap between two bytes."""
    client = await authenticated(impatient)
    others: list[str] = []
    try:
        await client.command(b"MAIL FROM:<alice@example.org>")
        await client.command(b"RCPT TO:<bob@example.com>")
        assert (await client.command(b"DATA"))[0] == 354
        with contextlib.suppress(ConnectionError, OSError):
            for n in range(8):
                await client.send(b"x")
                if n == 2:  # meanwhile others are served
                    others.append(await send_one(impatient))
                await asyncio.sleep(0.5)
        assert await client.reply() == (421, "4.4.2 Timeout, closing connection")
    finally:
        await client.close()
    assert len(others) == 1 and await impatient.queue.count() == 1


@pytest.mark.parametrize("listener", ["implicit", "starttls"])
async def test_a_tls_handshake_that_never_ends_is_cut_off(impatient, listener):
    """A client that opens TLS and then says nothing holds no slot for long."""
    if listener == "implicit":
        reader, writer = await asyncio.open_connection("127.0.0.1", impatient.implicit_port)
    else:
        client = await RawClient.connect(impatient.starttls_port)
        await client.reply()
        assert (await client.command(b"STARTTLS"))[0] == 220
        reader, writer = client.reader, client.writer
    try:
        async with asyncio.timeout(10):  # handshake 1 s; command 2 s
            assert await reader.read() == b""
    finally:
        writer.close()


def rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.timeout(120)
async def test_memory_stays_bounded_under_floods(stack):
    """32 MB without a line end, and 32 MB of DATA over a 1 MB size limit, at once: the
    server discards as it reads instead of buffering (the client here sends in chunks)."""
    chunk = b"A" * 65536
    # Log in first: eight argon2 checks at once take 19 MiB each, which the allocator keeps.
    clients = [await authenticated(stack) for _ in range(8)]
    before = rss()

    async def flood(client: RawClient, in_data: bool) -> tuple[int, str]:
        try:
            if in_data:
                await client.command(b"MAIL FROM:<alice@example.org>")
                await client.command(b"RCPT TO:<bob@example.com>")
                assert (await client.command(b"DATA"))[0] == 354
                for _ in range(128):  # 8 MB of short lines
                    await client.send((b"B" * 998 + b"\r\n") * 64)
                return await client.command(b".")
            for _ in range(128):  # 8 MB, one line
                await client.send(chunk)
            return await client.command(b"")
        finally:
            await client.close()

    results = await asyncio.gather(*(flood(c, n % 2 == 1) for n, c in enumerate(clients)))
    grown = rss() - before
    assert {code for code, _ in results} == {500, 552}, results
    assert grown < 24 * 1024 * 1024, f"grew {grown // 1024} KiB for 64 MB sent"
    await send_one(stack)
    assert await stack.queue.count() == 1


# --- random and malformed commands (hypothesis) ---
#
# Hypothesis drives synchronous tests; the server and the clients run on an event loop in a
# thread of their own, which the examples submit coroutines to.


@pytest.fixture(scope="module")
def threaded(redis_server, server_cert, ca) -> Iterator[tuple[asyncio.AbstractEventLoop, object]]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    ready: asyncio.Future = asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop)
    ready.result(5)
    holder: dict[str, object] = {}
    stopped = asyncio.Event()

    async def serve() -> None:
        redis = connect(redis_server.url, timeout=5)
        await redis.flushall()
        await add_sender(redis)
        async with guarded_stack(
            redis,
            SystemClock(),
            server_cert,
            ca,
            max_message_size=100_000,
            timeouts={"command": "2s", "data": "2s"},
        ) as stack:
            holder["stack"] = stack
            await stopped.wait()
        await redis.aclose()

    serving = asyncio.run_coroutine_threadsafe(serve(), loop)
    for _ in range(500):
        if "stack" in holder:
            break
        threading.Event().wait(0.01)
    try:
        yield loop, holder["stack"]
    finally:
        loop.call_soon_threadsafe(stopped.set)
        serving.result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


VERBS = [
    b"EHLO",
    b"HELO",
    b"MAIL FROM:",
    b"RCPT TO:",
    b"DATA",
    b"RSET",
    b"NOOP",
    b"VRFY",
    b"EXPN",
    b"HELP",
    b"AUTH",
    b"AUTH PLAIN",
    b"AUTH LOGIN",
    b"STARTTLS",
    b"BDAT",
    b"XCLIENT",
    b"*",
    b"",
    b".",
]
ARGS = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=80).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.sampled_from(
        [
            b"<alice@example.org>",
            b"<>",
            b"<bob@example.com>",
            b"<@hop:bob@example.com>",
            b"<bob@example.com> SIZE=99999999999999",
            b"<bob@example.com> BODY=8BITMIME SMTPUTF8",
            b"<bob@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@example.com",
            b"<alice@example.org> RET=FULL ENVID=x+2Bx",
            b"<alice@example.org> RET=NONE ENVID=",
            b"<" * 60,
            b"=",
            b"AGFsaWNlAHdyb25n",
        ]
    ),
)
LINE = st.tuples(st.sampled_from(VERBS), ARGS, st.sampled_from([b"\r\n", b"\n", b"\r"])).map(
    lambda t: (t[0] + b" " + t[1] if t[1] else t[0]).replace(b"\r\n", b" ") + t[2]
)
ENHANCED = re.compile(rb"^[245]\d\d[ -][245]\.\d{1,3}\.\d{1,3}( |$)")


async def converse(stack, lines: list[bytes], login: bool) -> list[bytes]:
    client = await RawClient.connect(stack.implicit_port, tls=stack.client_tls)
    try:
        assert (await client.reply())[0] == 220
        if login:
            await client.command(b"EHLO fuzz.test")
            assert (await client.login("alice", PASSWORD))[0] == 235
        await client.send(b"".join(lines) + b"\r\n.\r\nQUIT\r\n")
        try:
            rest = await client.closed(timeout=20)
        except (ConnectionError, OSError):
            rest = b""  # reset after a 421/502: what matters is that it ended
    finally:
        await client.close()
    return rest.splitlines()


def check_replies(replies: list[bytes]) -> None:
    for line in replies:
        match = REPLY_LINE.match(line)
        assert match, f"not a reply line: {line!r}"
        code = int(match.group(1))
        if code >= 400:
            assert ENHANCED.match(line), f"no enhanced status code: {line!r}"


FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.mark.timeout(300)
@FUZZ
@given(lines=st.lists(LINE, min_size=1, max_size=12))
def test_random_commands_before_auth(threaded, lines):
    loop, stack = threaded
    replies = asyncio.run_coroutine_threadsafe(converse(stack, lines, False), loop).result(30)
    check_replies(replies)
    assert not any(r.startswith((b"354", b"250 2.0.0 Queued", b"235")) for r in replies)


@pytest.mark.timeout(300)
@FUZZ
@given(lines=st.lists(LINE, min_size=1, max_size=12))
def test_random_commands_after_auth(threaded, lines):
    loop, stack = threaded
    before = asyncio.run_coroutine_threadsafe(stack.queue.count(), loop).result(10)
    replies = asyncio.run_coroutine_threadsafe(converse(stack, lines, True), loop).result(30)
    check_replies(replies)
    queued = sum(r.startswith(b"250 2.0.0 Queued as ") for r in replies)
    after = asyncio.run_coroutine_threadsafe(stack.queue.count(), loop).result(10)
    assert after - before == queued, "a 250 is a stored message, and only a 250 is"


def test_the_server_survived_the_fuzzing(threaded):
    loop, stack = threaded
    queue_id = asyncio.run_coroutine_threadsafe(send_one(stack), loop).result(30)
    assert queue_id
