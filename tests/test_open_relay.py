"""Never an open relay: without AUTH nothing is accepted, whatever the address trick.

Authenticated customers may send anywhere (that is the product), so for them the question is
only where the mail goes: the relay routes on the domain after the last `@` and never acts
on `%`, `!` or quoted local parts itself. A source route (`@hop:user@domain`) is accepted
with the route dropped, as RFC 5321 4.1.1.3 says (SHOULD ignore): the customer may write to
`user@domain` anyway, and the relay never makes the route's host a hop.
"""

from __future__ import annotations

import base64

import pytest

from tests.conftest import PASSWORD, add_sender
from tests.support.guarded import RawClient, guarded_stack

TRICKS = [
    "victim@ext.example",
    "victim%ext.example@relay.test",
    "victim%ext.example@localhost",
    "ext.example!victim@relay.test",
    "ext.example!victim",
    '"victim@ext.example"@relay.test',
    '"victim%ext.example"@relay.test',
    "@relay.test:victim@ext.example",
    "@relay.test,@localhost:victim@ext.example",
    "victim@ext.example@relay.test",
    "victim@[127.0.0.1]",
    "victim@ext.example.",
    "postmaster",
    "",
]


@pytest.fixture
async def stack(redis, clock, server_cert, ca):
    await add_sender(redis)
    async with guarded_stack(redis, clock, server_cert, ca) as stack:
        yield stack


async def session(stack, implicit: bool, source: str = "127.0.0.1") -> RawClient:
    """Connected, greeted, EHLO done, TLS on (STARTTLS on the 587-style listener)."""
    if implicit:
        client = await RawClient.connect(stack.implicit_port, tls=stack.client_tls, source=source)
    else:
        client = await RawClient.connect(stack.starttls_port, source=source)
    assert (await client.reply())[0] == 220
    assert (await client.command(b"EHLO attacker.test"))[0] == 250
    if not implicit:
        await client.starttls(stack.client_tls)
        assert (await client.command(b"EHLO attacker.test"))[0] == 250
    return client


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "implicit"])
async def test_without_auth_every_trick_is_refused(stack, implicit):
    client = await session(stack, implicit)
    try:
        for sender in ("", "victim@ext.example", "postmaster@relay.test"):
            code, text = await client.command(f"MAIL FROM:<{sender}>".encode())
            assert (code, text) == (530, "5.7.0 Authentication required")
        for rcpt in TRICKS:
            code, _ = await client.command(f"RCPT TO:<{rcpt}>".encode())
            assert code == 530, rcpt
        assert (await client.command(b"DATA"))[0] == 530
    finally:
        await client.close()
    assert await stack.queue.count() == 0


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "implicit"])
async def test_a_pipelined_transaction_without_auth_queues_nothing(stack, implicit):
    """The whole transaction in one write: its body lines must not become commands either."""
    client = await session(stack, implicit)
    try:
        await client.send(
            b"MAIL FROM:<a@ext.example>\r\n"
            b"RCPT TO:<victim%ext.example@relay.test>\r\n"
            b"DATA\r\n"
            b"Subject: spam\r\n\r\nbuy now\r\n.\r\n"
            b"QUIT\r\n"
        )
        codes = [(await client.reply())[0] for _ in range(3)]
        assert codes == [530, 530, 530]
        # The body lines arrive as commands, are refused as such, and QUIT ends it.
        rest = await client.closed()
        assert b"250 2.0.0 Queued" not in rest and b"354" not in rest
        assert rest.endswith(b"221 2.0.0 Bye\r\n")
    finally:
        await client.close()
    assert await stack.queue.count() == 0


async def test_a_failed_or_aborted_auth_opens_nothing(stack):
    client = await session(stack, implicit=True)
    try:
        assert (await client.login("alice", "wrong password"))[0] == 535
        assert (await client.command(b"MAIL FROM:<a@ext.example>"))[0] == 530
        assert (await client.command(b"AUTH LOGIN"))[0] == 334
        assert (await client.command(b"*"))[0] == 501
        assert (await client.command(b"MAIL FROM:<a@ext.example>"))[0] == 530
        # AUTH PLAIN asking to act as someone else (authzid) is refused, not ignored.
        blob = base64.b64encode(f"bob\0alice\0{PASSWORD}".encode())
        assert (await client.command(b"AUTH PLAIN " + blob))[0] == 535
        assert (await client.command(b"MAIL FROM:<a@ext.example>"))[0] == 530
    finally:
        await client.close()
    assert await stack.queue.count() == 0


async def login_and_send(stack, rcpt: bytes) -> tuple[int, str]:
    client = await session(stack, implicit=True)
    try:
        assert (await client.login("alice", PASSWORD))[0] == 235
        assert (await client.command(b"MAIL FROM:<alice@example.org>"))[0] == 250
        code, text = await client.command(b"RCPT TO:<" + rcpt + b">")
        if code != 250:
            return code, text
        assert (await client.command(b"DATA"))[0] == 354
        return await client.command(b"Subject: route\r\n\r\nbody\r\n.")
    finally:
        await client.close()


@pytest.mark.parametrize(
    "rcpt,recipient,domain",
    [
        ("@relay.test:bob@ext.example", "bob@ext.example", "ext.example"),
        ("@a.example,@b.example:bob@ext.example", "bob@ext.example", "ext.example"),
        ("bob%ext.example@dest.example", "bob%ext.example@dest.example", "dest.example"),
        ("ext.example!bob@dest.example", "ext.example!bob@dest.example", "dest.example"),
        ('"bob@ext.example"@dest.example', '"bob@ext.example"@dest.example', "dest.example"),
    ],
)
async def test_authenticated_mail_goes_to_the_domain_after_the_last_at(
    stack, rcpt, recipient, domain
):
    code, text = await login_and_send(stack, rcpt.encode())
    assert code == 250 and text.startswith("2.0.0 Queued as "), text
    queue_id = text.split()[-1]
    stored = await stack.queue.load(queue_id)
    assert stored.meta.recipients == (recipient,)
    assert [job.domain for job in await stack.queue.jobs_of(queue_id)] == [domain]


@pytest.mark.parametrize("rcpt", ["bob@ext.example@dest.example", "ext.example!bob", "bob"])
async def test_authenticated_mail_to_an_address_without_a_domain_is_refused(stack, rcpt):
    code, text = await login_and_send(stack, rcpt.encode())
    assert code in (501, 553) and text.startswith("5.1."), (code, text)
    assert await stack.queue.count() == 0
