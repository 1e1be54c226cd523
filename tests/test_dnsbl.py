"""DNSBL lookups against a real DNS server serving list zones."""

from __future__ import annotations

import pytest

from relay.delivery.mx import make_resolver
from reputation.dnsbl import DnsblClient, Zone, query_name
from tests.support.dns_server import DnsServer

IP_ZONE = Zone("bl.test", "ip", {"127.0.0.2": "spam source", "127.0.0.4": "exploited host"})
DOMAIN_ZONE = Zone("dbl.test", "domain", {"127.0.1.2": "spammed domain"})


@pytest.fixture
async def dns():
    async with DnsServer() as server:
        server.load(
            "9.0.0.127.bl.test. A 127.0.0.2\n"
            '9.0.0.127.bl.test. TXT "Listed: see https://bl.test/9"\n'
            "8.0.0.127.bl.test. A 127.255.255.254\n"
            "7.0.0.127.bl.test. A 10.0.0.1\n"
            "spam.example.dbl.test. A 127.0.1.2\n"
            "other.example.dbl.test. A 127.0.1.99\n"
        )
        yield server


def client(dns, clock, timeout=1.0, zones=(IP_ZONE, DOMAIN_ZONE)):
    return DnsblClient(
        make_resolver(dns.settings(timeout)), zones, clock=clock.now, cache_ttl=60, timeout=timeout
    )


def test_query_names():
    assert query_name("192.0.2.1", IP_ZONE) == "1.2.0.192.bl.test"
    assert query_name("2001:db8::1", IP_ZONE).startswith("1.0.0.0.0.0.0.0")
    assert query_name("2001:db8::1", IP_ZONE).endswith(".8.b.d.0.1.0.0.2.bl.test")
    assert query_name("Spam.Example.", DOMAIN_ZONE) == "spam.example.dbl.test"


async def test_listed_ip_with_meaning_and_reason(dns, clock):
    result = await client(dns, clock).check_ip("127.0.0.9")
    (listing,) = result.listings
    assert listing.zone == "bl.test" and listing.answers == ("127.0.0.2",)
    assert listing.meaning == "spam source" and listing.reason == "Listed: see https://bl.test/9"
    assert listing.checked_at == clock.now() and not result.failures


async def test_not_listed_is_nxdomain(dns, clock):
    result = await client(dns, clock).check_ip("127.0.0.2")  # not in the zone
    assert not result.listed and not result.failures


async def test_refusal_and_bogus_answers_are_errors_not_listings(dns, clock):
    refused = await client(dns, clock).check_ip("127.0.0.8")
    assert not refused.listed and "refused the query" in refused.failures[0][1]
    bogus = await client(dns, clock).check_ip("127.0.0.7")
    assert not bogus.listed and "bogus answer 10.0.0.1" in bogus.failures[0][1]


async def test_domain_lists(dns, clock):
    c = client(dns, clock)
    assert (await c.check_domain("spam.example")).listings[0].meaning == "spammed domain"
    assert (await c.check_domain("other.example")).listings[0].meaning == "listed (127.0.1.99)"
    assert not (await c.check_domain("clean.example")).listed
    assert not (await c.check_ip("127.0.0.9")).failures  # ip zones only for IPs


async def test_timeout_fails_open(dns, clock):
    dns.silence("9.0.0.127.bl.test")
    result = await client(dns, clock, timeout=0.3).check_ip("127.0.0.9")
    assert not result.listed and "timeout" in result.failures[0][1]


async def test_answers_are_cached_until_the_ttl(dns, clock):
    c = client(dns, clock)
    await c.check_ip("127.0.0.9")
    asked = len(dns.queries)
    await c.check_ip("127.0.0.9")
    assert len(dns.queries) == asked, "the second lookup came from the cache"
    dns.set("9.0.0.127.bl.test", "A")  # delisted
    clock.advance(61)
    assert not (await c.check_ip("127.0.0.9")).listed
