"""The delivery DNS cache: answers kept for their TTL, negative answers for the SOA minimum
(RFC 2308), on the fake clock, against the real test DNS server."""

from __future__ import annotations

import asyncio

import pytest

from relay.delivery.dns_cache import DnsCache
from relay.delivery.errors import PermanentRouteError
from relay.delivery.mx import make_resolver, resolve_hops
from relay.sink import Sink
from tests.support.dns_server import DnsServer
from tests.support.engine import engine, sink_on

ZONE = "dest.test. 300 MX 10 mx.dest.test.\nmx.dest.test. 120 A 127.0.0.10\n"


def server(zone: str = ZONE) -> DnsServer:
    """The test zones, under a `test.` SOA whose MINIMUM (negative TTL) is 30 s."""
    dns = DnsServer(zone)
    dns.set("test.", "SOA", "ns.test. admin.test. 1 3600 600 86400 30", ttl=3600)
    return dns


async def hops(dns: DnsServer, cache: DnsCache, domain: str = "dest.test") -> list[str]:
    resolver = make_resolver(dns.settings(), cache=cache)
    found = await resolve_hops(domain, routes={}, mx_port=25, resolver=resolver)
    return [address for hop in found for address in hop.addresses]


async def test_answers_are_kept_for_their_ttl(clock) -> None:
    cache = DnsCache(clock)
    async with server() as dns:
        assert await hops(dns, cache) == ["127.0.0.10"]
        asked = len(dns.queries)
        assert asked == 3  # MX, A, AAAA
        dns.set("mx.dest.test.", "A", "127.0.0.11")
        clock.advance(29)
        assert await hops(dns, cache) == ["127.0.0.10"]  # all from the cache
        assert len(dns.queries) == asked
        clock.advance(100)  # past the A record's 120 s and the AAAA NODATA's 30 s
        assert await hops(dns, cache) == ["127.0.0.11"]
        assert sorted(dns.queries[asked:]) == [("mx.dest.test.", "A"), ("mx.dest.test.", "AAAA")]
    counts = cache.counts()
    assert (counts.hits, counts.misses) == (4, 5)


async def test_nxdomain_is_cached_for_the_soa_minimum(clock) -> None:
    cache = DnsCache(clock)
    async with server() as dns:
        for _ in range(3):
            with pytest.raises(PermanentRouteError):
                await hops(dns, cache, "nowhere.test")
        assert dns.queries == [("nowhere.test.", "MX")]
        dns.load("nowhere.test. MX 10 mx.dest.test.\n")
        clock.advance(31)  # min(SOA TTL 3600, MINIMUM 30)
        assert await hops(dns, cache, "nowhere.test") == ["127.0.0.10"]


async def test_a_zero_ttl_is_never_cached(clock) -> None:
    cache = DnsCache(clock)
    async with server(ZONE + "zero.test. 0 MX 10 mx.dest.test.\n") as dns:
        await hops(dns, cache, "zero.test")
        await hops(dns, cache, "zero.test")
        assert dns.queries.count(("zero.test.", "MX")) == 2


async def test_the_cache_is_bounded(clock) -> None:
    cache = DnsCache(clock, max_size=2)
    async with server() as dns:
        await hops(dns, cache)
        assert cache.counts().size == 2


async def test_steady_delivery_asks_dns_once_per_ttl(redis, clock) -> None:
    dest = Sink()
    cache = DnsCache(clock)
    async with sink_on(dest, "127.0.0.10") as route, server() as dns:
        port = int(route.split(":")[1])
        async with engine(redis, clock, dns=dns.settings(), mx_port=port, dns_cache=cache) as e:
            for n in range(20):
                await e.submit(f"r{n}@dest.test")
                await e.step(1)
            assert dest.count == 20
    # MX, A, AAAA and the MTA-STS record (none: NXDOMAIN, kept for the SOA minimum), once
    assert sorted(dns.queries) == [
        ("_mta-sts.dest.test.", "TXT"),
        ("dest.test.", "MX"),
        ("mx.dest.test.", "A"),
        ("mx.dest.test.", "AAAA"),
    ]
    assert cache.counts().hits >= 19 * 4


async def test_callers_asking_the_same_at_once_share_one_query(clock) -> None:
    cache = DnsCache(clock)
    async with server() as dns:
        resolver = make_resolver(dns.settings(), cache=cache)
        found = await asyncio.gather(
            *(
                resolve_hops("dest.test", routes={}, mx_port=25, resolver=resolver)
                for _ in range(20)
            )
        )
        assert all(hops == found[0] for hops in found)
        assert sorted(dns.queries) == [
            ("dest.test.", "MX"),
            ("mx.dest.test.", "A"),
            ("mx.dest.test.", "AAAA"),
        ]
        assert resolver.coalesced >= 19
        with pytest.raises(PermanentRouteError):  # an error reaches every caller too
            await asyncio.gather(
                *(
                    resolve_hops("nowhere.test", routes={}, mx_port=25, resolver=resolver)
                    for _ in range(5)
                )
            )
        assert dns.queries.count(("nowhere.test.", "MX")) == 1
