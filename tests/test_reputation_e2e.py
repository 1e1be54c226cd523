"""Reputation in the running relay: the monitor, SPF at MAIL FROM, DKIM at acceptance."""

from __future__ import annotations

import email
import email.policy
import time

import aiosmtplib
import dkim
import pytest

from relay.abuse.store import SuspensionStore
from relay.config import ReputationSettings, SenderAuthSettings
from relay.delivery.egress_state import egress_state
from relay.sender_auth import DkimKeyStore
from relay.sender_auth.key_vault import KeyVault
from reputation.dkim import dns_record, generate_key
from tests.conftest import PASSWORD, add_sender, wait_until
from tests.test_end_to_end import relay_settings, run_relay, submit


def with_parts(settings, **parts):
    return settings.model_copy(update=parts)


async def test_listing_of_an_egress_ip_within_one_monitor_interval(
    redis, redis_server, clock, server_cert, ca, dns, sink
):
    received, port = sink
    await add_sender(redis)
    settings = with_parts(
        relay_settings(
            redis_server.url,
            server_cert,
            dns,
            routes={"*": f"127.0.0.1:{port}"},
            egress=[{"ip": "127.0.0.2", "helo": "out.relay.test"}],
        ),
        reputation=ReputationSettings(
            zones=[{"zone": "bl.test", "kind": "ip"}],
            monitor_interval="200ms",
            data_check=False,
        ),
    )
    task, stop = await run_relay(settings)
    try:
        await submit(settings, ca, 0, ["bob@example.com"])
        await received.wait_for(1, timeout=10)
        dns.set("2.0.0.127.bl.test", "A", "127.0.0.2")
        state = egress_state(redis, clock, settings.delivery)

        async def listed():
            return (await state.describe(settings.delivery.egress))[0].state == "listed"

        await wait_until(listed)
        store = SuspensionStore(redis)

        async def suspended():
            return bool(await store.listing(open_only=True))

        await wait_until(suspended)
        (s,) = await store.listing(open_only=True)
        assert s.account == "alice" and s.evidence["share"] == 1.0
        assert s.evidence["ip"] == "127.0.0.2" and s.actor == "system:monitor"
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as caught:
            await submit(settings, ca, 0, ["carol@example.com"])
        code, text = caught.value.recipients[0].code, caught.value.recipients[0].message
        assert code == 451 and "Account suspended (reputation)" in text

        dns.set("2.0.0.127.bl.test", "A")  # delisted: back in rotation

        async def healthy():
            return (await state.describe(settings.delivery.egress))[0].state == "healthy"

        await wait_until(healthy)
        assert len(await store.listing(open_only=True)) == 1, "stays until reviewed"
    finally:
        stop.set()
        await task


@pytest.mark.parametrize("mode", ["warn", "enforce"])
async def test_spf_at_mail_from(redis, redis_server, server_cert, ca, dns, sink, mode):
    received, port = sink
    await add_sender(redis, sends_from=("good.example", "bad.example"))
    dns.load(
        'good.example. TXT "v=spf1 include:_spf.relay.test -all"\n'
        '_spf.relay.test. TXT "v=spf1 ip4:127.0.0.2 ip4:127.0.0.3 -all"\n'
        'bad.example. TXT "v=spf1 ip4:192.0.2.1 -all"\n'
    )
    settings = with_parts(
        relay_settings(
            redis_server.url,
            server_cert,
            dns,
            routes={"*": f"127.0.0.1:{port}"},
            egress=[{"ip": "127.0.0.2", "helo": "a"}, {"ip": "127.0.0.3", "helo": "b"}],
        ),
        sender_auth=SenderAuthSettings(spf=mode, dkim=False),
    )
    task, stop = await run_relay(settings)
    try:
        context = __import__("ssl").create_default_context()
        ca.configure_trust(context)
        address = settings.submission.listeners[1].address
        async with aiosmtplib.SMTP(
            hostname="127.0.0.1", port=address.port, use_tls=True, tls_context=context, timeout=10
        ) as smtp:
            await smtp.login("alice", PASSWORD)
            await smtp.sendmail(
                "news@good.example", ["bob@example.com"], b"Subject: ok\r\n\r\nx\r\n"
            )
            reply = await smtp.execute_command(b"MAIL", b"FROM:<news@bad.example>")
            if mode == "enforce":
                assert reply.code == 550 and reply.message.startswith("5.7.23 SPF of bad.example")
            else:
                assert reply.code == 250
                await smtp.rcpt("bob@example.com")
                await smtp.data(b"Subject: warned\r\n\r\nx\r\n")
        messages = await received.wait_for(1 if mode == "enforce" else 2, timeout=10)
    finally:
        stop.set()
        await task
    good = next(m for m in messages if m.mail_from == "news@good.example")
    assert b"X-Relay-SPF" not in good.data
    if mode == "warn":
        warned = next(m for m in messages if m.mail_from == "news@bad.example")
        assert b"X-Relay-SPF: fail (bad.example does not authorize egress 127.0.0.2)" in warned.data


async def test_mail_from_a_domain_with_a_key_is_dkim_signed(
    redis, redis_server, server_cert, ca, dns, sink, tmp_path
):
    received, port = sink
    await add_sender(redis, sends_from=("example.org",))
    key = generate_key("example.org", "relay1", "ed25519-sha256")
    settings = with_parts(
        relay_settings(redis_server.url, server_cert, dns, routes={"*": f"127.0.0.1:{port}"}),
        sender_auth=SenderAuthSettings(key_file=tmp_path / "dkim.key", create_key_file=True),
    )
    keys = DkimKeyStore(redis, KeyVault.from_settings(settings.sender_auth))
    await keys.set_owner("example.org", "alice")
    await keys.put(key)
    task, stop = await run_relay(settings)
    try:
        await submit(settings, ca, 0, ["bob@example.com"])  # From: alice@example.org
        (message,) = await received.wait_for(1, timeout=10)
    finally:
        stop.set()
        await task
    _, value = dns_record(key)
    assert b"DKIM-Signature: v=1; a=ed25519-sha256" in message.data
    assert dkim.verify(message.data, dnsfunc=lambda q, timeout=5: value.encode())
    parsed = email.message_from_bytes(message.data, policy=email.policy.default)
    assert parsed.get_all("Received")[0].startswith("from "), "the trace header stays on top"
    assert abs(int(parsed["DKIM-Signature"].split("t=")[1].split(";")[0]) - time.time()) < 600
