"""At DATA: a sender domain or a link on a domain list refuses the message and suspends."""

from __future__ import annotations

import aiosmtplib
import pytest

from quota import QuotaStore
from relay.abuse.content import ContentGuard, sender_domains
from relay.abuse.factory import dnsbl_client, suspension_service
from relay.abuse.traffic import TrafficLog
from relay.config import Settings
from tests.conftest import PASSWORD, add_sender
from tests.support.dns_server import DnsServer
from tests.support.spool import temp_spool
from tests.support.submission import client, start_stack


@pytest.fixture
async def dns():
    async with DnsServer() as server:
        server.load("spam-shop.example.dbl.test. A 127.0.1.2\n")
        yield server


@pytest.fixture
async def stack(redis, clock, server_cert, ca, dns):
    await add_sender(redis)
    settings = Settings(
        hostname="relay.test",
        spool={"dir": temp_spool().root},
        dns={"servers": [f"127.0.0.1:{dns.port}"]},
        reputation={"zones": [{"zone": "dbl.test", "kind": "domain"}], "lookup_timeout": "300ms"},
    )
    quota = QuotaStore(redis, default_per_minute=1000, per_recipient=100)
    suspensions = suspension_service(redis, settings, clock, quota)
    guard = ContentGuard(
        dnsbl=dnsbl_client(settings, clock),
        suspensions=suspensions,
        traffic=TrafficLog(redis),
        clock=clock,
        deadline=1.0,
    )
    stack, servers = await start_stack(redis, clock, server_cert, ca, content_check=guard.check)
    yield stack, suspensions
    for server in servers:
        server.close()
        await server.wait_closed()


async def send(stack, body: bytes, mail_from: str = "alice@customer.example"):
    async with client(stack) as smtp:
        await smtp.login("alice", PASSWORD)
        await smtp.mail(mail_from)
        await smtp.rcpt("bob@example.com")
        try:
            response = await smtp.data(body)
        except aiosmtplib.SMTPDataError as exc:
            return exc.code, exc.message
        return response.code, response.message


async def test_link_on_domain_list_is_554_and_suspends(stack, clock):
    stack, suspensions = stack
    code, text = await send(
        stack, b"Subject: deal\r\n\r\nBuy at https://www.spam-shop.example/now\r\n"
    )
    assert code == 554 and text.startswith("5.7.1 Refused: link in the message spam-shop.example")
    (s,) = await suspensions.store.listing(open_only=True)
    assert s.account == "alice" and s.actor == "system:data-check"
    assert s.evidence["listings"][0]["subject"] == "spam-shop.example"
    assert await stack.queue.count() == 0
    async with client(stack) as smtp:
        await smtp.login("alice", PASSWORD)
        await smtp.mail("alice@customer.example")
        reply = await smtp.execute_command(b"RCPT", b"TO:<bob@example.com>")
        assert reply.code == 451 and "Account suspended (reputation)" in reply.message


async def test_sender_domain_on_list_is_refused(stack):
    stack, _ = stack
    code, text = await send(stack, b"Subject: hi\r\n\r\nclean\r\n", "news@spam-shop.example")
    assert code == 554 and "sender domain spam-shop.example" in text


async def test_clean_mail_passes_and_lookup_timeout_fails_open(stack, dns):
    stack, suspensions = stack
    code, _ = await send(stack, b"Subject: hi\r\n\r\nsee https://clean.example/\r\n")
    assert code == 250
    dns.silence("slow.example.dbl.test")
    code, _ = await send(stack, b"Subject: hi\r\n\r\nsee https://slow.example/\r\n")
    assert code == 250, "a DNS timeout never blocks mail"
    assert await suspensions.store.listing(open_only=False) == []


def test_sender_domains_from_envelope_and_from_header():
    body = (
        b"From: Shop <News@Mail.Shop.Example.co.uk>,\r\n other@b.test\r\nSubject: x\r\n"
        b"\r\nFrom: no@c.test\r\n"
    )
    assert sender_domains("bounce@a.test", body) == ["a.test", "example.co.uk", "b.test"]
    assert sender_domains("", b"Subject: none\r\n\r\n") == []
