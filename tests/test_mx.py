"""MX routing against a real DNS server in-process."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest

from quota import Duration
from relay.config import DnsSettings, HostPort
from relay.delivery.errors import PermanentRouteError, TransientRouteError
from relay.delivery.mx import Hop, make_resolver, resolve_hops
from relay.errors import ConfigError
from tests.conftest import free_port
from tests.support.dns_server import DnsServer

ZONE = """
example.com.        MX 20 mx2.example.com.
example.com.        MX 10 mx1.example.com.
example.com.        MX 30 mx3.example.com.
mx1.example.com.    A 127.0.0.11
mx2.example.com.    A 127.0.0.12
mx2.example.com.    AAAA ::1
mx3.example.com.    A 127.0.0.13
implicit.test.      A 127.0.0.21
implicit.test.      AAAA ::1
nomail.test.        MX 0 .
textonly.test.      TXT "v=spf1 -all"
"""


@pytest.fixture
async def dns() -> AsyncIterator[DnsServer]:
    async with DnsServer(ZONE) as server:
        yield server


async def hops(
    dns: DnsServer,
    domain: str,
    *,
    routes: dict[str, HostPort] | None = None,
    dns_timeout: float = 2.0,
    rng: random.Random | None = None,
) -> list[Hop]:
    resolver = make_resolver(dns.settings(timeout=dns_timeout))
    return await resolve_hops(domain, routes=routes or {}, mx_port=2525, resolver=resolver, rng=rng)


async def test_mx_hosts_come_in_preference_order_with_their_addresses(dns: DnsServer) -> None:
    assert await hops(dns, "example.com") == [
        Hop("mx1.example.com", 2525, 10, ("127.0.0.11",)),
        Hop("mx2.example.com", 2525, 20, ("127.0.0.12", "::1")),
        Hop("mx3.example.com", 2525, 30, ("127.0.0.13",)),
    ]


async def test_domain_is_matched_without_case_or_final_dot(dns: DnsServer) -> None:
    assert (await hops(dns, "Example.COM."))[0].host == "mx1.example.com"


async def test_equal_preferences_are_shuffled_but_stay_behind_better_ones(dns: DnsServer) -> None:
    dns.set(
        "tie.test", "MX", "5 first.tie.test.", "10 a.tie.test.", "10 b.tie.test.", "10 c.tie.test."
    )
    for host in ("first", "a", "b", "c"):
        dns.set(f"{host}.tie.test", "A", "127.0.0.30")
    orders = set()
    for seed in range(20):
        found = await hops(dns, "tie.test", rng=random.Random(seed))
        assert found[0].host == "first.tie.test"
        assert sorted(h.host for h in found[1:]) == ["a.tie.test", "b.tie.test", "c.tie.test"]
        orders.add(tuple(h.host for h in found))
    assert len(orders) > 1


async def test_a_domain_without_mx_is_its_own_mx(dns: DnsServer) -> None:
    assert await hops(dns, "implicit.test") == [
        Hop("implicit.test", 2525, 0, ("127.0.0.21", "::1"))
    ]


async def test_null_mx_bounces_with_5_1_10(dns: DnsServer) -> None:
    with pytest.raises(PermanentRouteError) as caught:
        await hops(dns, "nomail.test")
    assert (caught.value.code, caught.value.status) == (556, "5.1.10")


async def test_null_mx_beside_real_mx_is_ignored(dns: DnsServer) -> None:
    dns.set("mixed.test", "MX", "0 .", "10 mx1.example.com.")
    assert [h.host for h in await hops(dns, "mixed.test")] == ["mx1.example.com"]


async def test_nonexistent_domain_bounces_with_5_1_2(dns: DnsServer) -> None:
    with pytest.raises(PermanentRouteError) as caught:
        await hops(dns, "nowhere.test")
    assert (caught.value.code, caught.value.status) == (550, "5.1.2")


async def test_domain_with_neither_mx_nor_address_bounces(dns: DnsServer) -> None:
    with pytest.raises(PermanentRouteError) as caught:
        await hops(dns, "textonly.test")
    assert caught.value.status == "5.4.4"


@pytest.mark.parametrize("domain", ["", ".", "a..b", "x" * 64 + ".test"])
async def test_malformed_domain_bounces(dns: DnsServer, domain: str) -> None:
    with pytest.raises(PermanentRouteError) as caught:
        await hops(dns, domain)
    assert caught.value.status == "5.1.2"
    assert dns.queries == []


async def test_servfail_is_transient(dns: DnsServer) -> None:
    dns.servfail("example.com")
    with pytest.raises(TransientRouteError) as caught:
        await hops(dns, "example.com")
    assert (caught.value.code, caught.value.status) == (451, "4.4.3")


async def test_no_answer_is_transient(dns: DnsServer) -> None:
    dns.silence("example.com")
    with pytest.raises(TransientRouteError) as caught:
        await hops(dns, "example.com", dns_timeout=0.3)
    assert caught.value.status == "4.4.3"
    assert "timeout" in str(caught.value)


async def test_unreachable_resolver_is_transient() -> None:
    settings = DnsSettings(
        servers=[HostPort(host="127.0.0.1", port=free_port())], timeout=Duration(0.3)
    )
    with pytest.raises(TransientRouteError) as caught:
        await resolve_hops("example.com", routes={}, mx_port=25, resolver=make_resolver(settings))
    assert caught.value.status == "4.4.3"


async def test_mx_host_without_address_is_skipped(dns: DnsServer) -> None:
    dns.set("skip.test", "MX", "10 gone.skip.test.", "20 mx3.example.com.")
    assert [h.host for h in await hops(dns, "skip.test")] == ["mx3.example.com"]


async def test_mx_host_whose_lookup_fails_is_skipped(dns: DnsServer) -> None:
    dns.set("skip.test", "MX", "10 broken.skip.test.", "20 mx3.example.com.")
    dns.set("broken.skip.test", "A", "127.0.0.40")
    dns.servfail("broken.skip.test")
    assert [h.host for h in await hops(dns, "skip.test")] == ["mx3.example.com"]


async def test_no_mx_host_resolving_is_transient(dns: DnsServer) -> None:
    dns.set("dead.test", "MX", "10 gone.dead.test.", "20 gone2.dead.test.")
    with pytest.raises(TransientRouteError) as caught:
        await hops(dns, "dead.test")
    assert caught.value.status == "4.4.4"
    assert "gone.dead.test" in str(caught.value)


async def test_mx_host_lookup_failures_are_transient_dns_errors(dns: DnsServer) -> None:
    dns.set("dead.test", "MX", "10 broken.dead.test.")
    dns.set("broken.dead.test", "A", "127.0.0.40")
    dns.servfail("broken.dead.test")
    with pytest.raises(TransientRouteError) as caught:
        await hops(dns, "dead.test")
    assert caught.value.status == "4.4.3"


async def test_records_can_be_replaced_while_running(dns: DnsServer) -> None:
    dns.set("mx1.example.com", "A", "127.0.0.50", "127.0.0.51")
    assert sorted((await hops(dns, "example.com"))[0].addresses) == ["127.0.0.50", "127.0.0.51"]
    dns.set("example.com", "MX")
    with pytest.raises(PermanentRouteError):  # the name still exists: NODATA, not NXDOMAIN
        await hops(dns, "example.com")
    dns.set("example.com", "A", "127.0.0.60")
    assert await hops(dns, "example.com") == [Hop("example.com", 2525, 0, ("127.0.0.60",))]


async def test_large_answers_arrive_over_tcp(dns: DnsServer) -> None:
    addresses = [f"127.0.1.{n}" for n in range(1, 151)]
    dns.set("big.test", "A", *addresses)
    found = await hops(dns, "big.test")
    assert sorted(found[0].addresses) == sorted(addresses)


async def test_international_domain_is_looked_up_as_punycode(dns: DnsServer) -> None:
    dns.set("xn--bcher-kva.test", "MX", "10 mx1.example.com.")
    assert [h.host for h in await hops(dns, "Bücher.test")] == ["mx1.example.com"]


async def test_static_route_wins_over_mx_without_a_lookup(dns: DnsServer) -> None:
    routes = {"example.com": HostPort(host="127.0.0.99", port=2626)}
    assert await hops(dns, "example.com", routes=routes) == [Hop("127.0.0.99", 2626, 0)]
    assert dns.queries == []


async def test_wildcard_route_catches_every_other_domain(dns: DnsServer) -> None:
    routes = {
        "example.com": HostPort(host="127.0.0.99", port=2626),
        "*": HostPort(host="sink.localhost", port=2525),
    }
    assert await hops(dns, "nowhere.test", routes=routes) == [Hop("sink.localhost", 2525, 0)]
    assert await hops(dns, "EXAMPLE.com.", routes=routes) == [Hop("127.0.0.99", 2626, 0)]
    assert dns.queries == []


def test_resolver_asks_only_the_configured_servers() -> None:
    settings = DnsSettings(servers=["127.0.0.1:5353", "10.0.0.1", "[::1]:5300"], timeout="3s")
    resolver = make_resolver(settings)
    assert [(ns.address, ns.port) for ns in resolver.nameservers] == [  # type: ignore[union-attr]
        ("127.0.0.1", 5353),
        ("10.0.0.1", 53),
        ("::1", 5300),
    ]
    assert resolver.lifetime == 3.0
    assert resolver.timeout <= 3.0


def test_resolver_defaults_to_the_system_configuration() -> None:
    resolver = make_resolver(DnsSettings(timeout=Duration(0.5)))
    assert resolver.nameservers
    assert (resolver.lifetime, resolver.timeout) == (0.5, 0.5)


def test_resolver_needs_ip_addresses() -> None:
    with pytest.raises(ConfigError, match=r"dns\.servers"):
        make_resolver(DnsSettings(servers=[HostPort(host="dns.example", port=53)]))


async def public_hops(dns: DnsServer, domain: str, **kwargs: object) -> list[Hop]:
    resolver = make_resolver(dns.settings())
    return await resolve_hops(
        domain,
        mx_port=25,
        resolver=resolver,
        public_only=True,
        **kwargs,  # type: ignore[arg-type]
    )


async def test_public_only_drops_internal_mx_addresses(dns: DnsServer) -> None:
    dns.load(
        "mixed.test. MX 10 inside.mixed.test.\n"
        "mixed.test. MX 20 outside.mixed.test.\n"
        "inside.mixed.test. A 10.1.2.3\n"
        "outside.mixed.test. A 93.184.216.34\n"
        "outside.mixed.test. A 192.168.1.1\n"
    )
    (hop,) = await public_hops(dns, "mixed.test", routes={})
    assert (hop.host, hop.addresses) == ("outside.mixed.test", ("93.184.216.34",))
    with pytest.raises(PermanentRouteError) as caught:
        await public_hops(dns, "example.com", routes={})  # all on 127.0.0.x and ::1
    assert caught.value.status == "5.4.4" and "non-public" in str(caught.value)
    with pytest.raises(PermanentRouteError, match="non-public"):
        await public_hops(dns, "implicit.test", routes={})


async def test_static_routes_are_trusted_even_when_internal(dns: DnsServer) -> None:
    route = {"*": HostPort(host="127.0.0.1", port=2525)}
    (hop,) = await public_hops(dns, "example.com", routes=route)
    assert (hop.host, hop.port) == ("127.0.0.1", 2525)
