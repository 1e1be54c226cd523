"""Sender identities in the running relay: one customer cannot send as, or sign as, another.

The whole relay in-process (`serve`), a real Redis, a real SMTP sink as every destination,
real TLS; DKIM signatures checked with dkimpy.
"""

from __future__ import annotations

import ssl
import tempfile
from pathlib import Path

import aiosmtplib
import dkim
import pytest

from quota import QuotaStore
from relay.clock import SystemClock
from relay.config import SenderAuthSettings, Settings
from relay.queue import QueueStore
from relay.sender_auth import DkimKeyStore
from relay.sink import Sink
from reputation.dkim import dns_record, generate_key
from tests.conftest import PASSWORD, add_sender, wait_until
from tests.test_end_to_end import relay_settings, run_relay

NO_SUCH_USER = "550 5.1.1 no such user"


def with_identities(settings: Settings, mode: str) -> Settings:
    """The policy, and a DKIM key vault of the test's own (never the repo's var/)."""
    vault = Path(tempfile.mkdtemp(prefix="relay-test-vault-")) / "dkim.key"
    sender_auth = SenderAuthSettings(identities=mode, key_file=vault, create_key_file=True)
    return settings.model_copy(update={"sender_auth": sender_auth})


def client(settings: Settings, ca) -> aiosmtplib.SMTP:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return aiosmtplib.SMTP(
        hostname="127.0.0.1",
        port=settings.submission.listeners[1].address.port,
        use_tls=True,
        tls_context=context,
        timeout=10,
    )


def message(sender: str, subject: str = "hello") -> bytes:
    return f"From: {sender}\r\nTo: x@dest.example\r\nSubject: {subject}\r\n\r\nbody\r\n".encode()


async def test_default_enforce_refuses_unverified_mail_from_and_from(
    redis, redis_server, server_cert, ca, dns, sink
):
    received, port = sink
    await add_sender(redis, sends_from=("example.org",))
    settings = relay_settings(redis_server.url, server_cert, dns, routes={"*": f"127.0.0.1:{port}"})
    assert settings.sender_auth.identities == "enforce", "the default"
    task, stop = await run_relay(settings)
    try:
        async with client(settings, ca) as smtp:
            await smtp.login("alice", PASSWORD)
            reply = await smtp.execute_command(b"MAIL", b"FROM:<ceo@bank.example>")
            assert (reply.code, reply.message) == (
                550,
                "5.7.1 Sender domain bank.example is not verified for your account",
            )
            # a verified envelope does not carry a forged From:
            for forged in (b"From: CEO <ceo@bank.example>", b"From : ceo@bank.example"):
                await smtp.mail("news@mail.example.org")  # a subdomain is covered
                await smtp.rcpt("x@dest.example")
                with pytest.raises(aiosmtplib.SMTPDataError) as refused:
                    await smtp.data(forged + b"\r\nSubject: pay\r\n\r\nnow\r\n")
                assert refused.value.code == 550
                assert refused.value.message == (
                    "5.7.1 Sender domain bank.example (From: header) is not verified for your"
                    " account"
                )
            await smtp.sendmail(
                "alice@example.org", ["x@dest.example"], message('"Alice" <Alice@EXAMPLE.org>')
            )
        (delivered,) = await received.wait_for(1, timeout=10)
    finally:
        stop.set()
        await task
    assert delivered.mail_from == "alice@example.org"
    assert b"bank.example" not in b"".join(m.data for m in received.messages)


@pytest.mark.parametrize("mode", ["warn", "off"])
async def test_a_customer_cannot_get_another_customers_dkim_signature(
    redis, redis_server, server_cert, ca, dns, sink, mode
):
    """Row 1 of the review: logged in as A, `From: ceo@<B's domain>` came out signed with
    B's key. Even where the policy lets the message through, no signature of B's."""
    received, port = sink
    await add_sender(redis, "alice")
    await add_sender(redis, "bob", sends_from=("b.example",))
    key = generate_key("b.example", "s1", "ed25519-sha256")
    settings = with_identities(
        relay_settings(redis_server.url, server_cert, dns, routes={"*": f"127.0.0.1:{port}"}),
        mode,
    )
    keys = DkimKeyStore.from_settings(redis, settings.sender_auth)
    await keys.set_owner("b.example", "bob")
    await keys.put(key)
    _, record = dns_record(key)
    task, stop = await run_relay(settings)
    try:
        async with client(settings, ca) as smtp:
            await smtp.login("alice", PASSWORD)
            await smtp.sendmail(
                "alice@example.org", ["x@dest.example"], message("ceo@b.example", "forged")
            )
        async with client(settings, ca) as smtp:
            await smtp.login("bob", PASSWORD)
            await smtp.sendmail(
                "news@b.example", ["x@dest.example"], message("news@b.example", "genuine")
            )
        messages = await received.wait_for(2, timeout=10)
    finally:
        stop.set()
        await task
    forged = next(m for m in messages if b"Subject: forged" in m.data)
    genuine = next(m for m in messages if b"Subject: genuine" in m.data)
    dnsfunc = lambda q, timeout=5: record.encode()  # noqa: E731
    assert not dkim.verify(forged.data, dnsfunc=dnsfunc), "A got a signature of B's domain"
    assert b"DKIM-Signature" not in forged.data
    assert dkim.verify(genuine.data, dnsfunc=dnsfunc), "B's own mail is still signed"


async def test_warn_accepts_unverified_senders_but_gives_them_no_notices(
    redis, redis_server, server_cert, ca, dns
):
    """Row 2: `MAIL FROM:<victim@third.example> RET=FULL` to recipients that bounce, or with
    NOTIFY=SUCCESS. Under warn the message may go, but the third party gets nothing."""
    sink = Sink(reply_for_rcpt=lambda peer, rcpt: NO_SUCH_USER if "nobody" in rcpt else None)
    await add_sender(redis)
    async with sink.serving() as server:
        route = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
        settings = with_identities(
            relay_settings(redis_server.url, server_cert, dns, routes={"*": route}), "warn"
        )
        task, stop = await run_relay(settings)
        queue = QueueStore.from_settings(redis, SystemClock(), settings)
        try:
            async with client(settings, ca) as smtp:
                await smtp.login("alice", PASSWORD)
                reply = await smtp.execute_command(b"MAIL", b"FROM:<victim@third.example> RET=FULL")
                assert (reply.code, reply.message) == (
                    550,
                    "5.7.1 RET=FULL refused: sender domain third.example is not verified for"
                    " your account, so it gets no notices",
                )
                assert (await smtp.mail("victim@third.example")).code == 250
                reply = await smtp.execute_command(b"RCPT", b"TO:<ok@dest.example> NOTIFY=SUCCESS")
                assert reply.code == 550 and reply.message.startswith("5.7.1 NOTIFY=SUCCESS")
                await smtp.rcpt("nobody@dest.example")
                await smtp.data(message("victim@third.example", "unverified"))

            async def done() -> bool:
                return await queue.count() == 0

            await wait_until(done)
            assert sink.messages == [], "no notice to the third party"
            async with client(settings, ca) as smtp:  # a verified sender still gets one
                await smtp.login("alice", PASSWORD)
                await smtp.sendmail(  # another address: the first bounce suppressed nobody@
                    "alice@example.org", ["nobody2@dest.example"], message("alice@example.org")
                )
            [notice] = await sink.wait_for(1, timeout=10)
            await wait_until(done)
        finally:
            stop.set()
            await task
    assert notice.rcpt_tos == ("alice@example.org",) and notice.mail_from == ""
    usage = await QuotaStore(redis, default_per_minute=1000, per_recipient=100).usage(
        "alice", SystemClock().now()
    )
    assert usage.used == 3, "two messages of one recipient each, and the notice"
