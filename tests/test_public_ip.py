"""The private-destination check: IPv6 forms that embed an IPv4 address are judged by it."""

from __future__ import annotations

import pytest

from relay.delivery.errors import PermanentRouteError
from relay.delivery.mx import make_resolver, resolve_hops
from relay.delivery.public_ip import embedded_ipv4, is_public_address
from tests.support.dns_server import DnsServer

PUBLIC_V4 = "93.184.216.34"

# (address, may we deliver to it?, why)
TABLE = [
    # plain IPv4
    ("93.184.216.34", True, "global unicast"),
    ("8.8.8.8", True, "global unicast"),
    ("10.0.0.5", False, "RFC 1918"),
    ("172.16.0.1", False, "RFC 1918"),
    ("192.168.1.1", False, "RFC 1918"),
    ("127.0.0.1", False, "loopback"),
    ("169.254.169.254", False, "link-local (cloud metadata)"),
    ("100.64.0.1", False, "shared address space (CGN)"),
    ("0.0.0.0", False, "this network"),
    ("192.0.2.1", False, "documentation"),
    ("224.0.0.1", False, "multicast"),
    ("239.255.255.250", False, "multicast"),
    ("240.0.0.1", False, "reserved"),
    ("255.255.255.255", False, "broadcast"),
    # plain IPv6
    ("2606:2800:220:1:248:1893:25c8:1946", True, "global unicast"),
    ("2a00:1450:4001:80b::200e", True, "global unicast"),
    ("::1", False, "loopback"),
    ("::", False, "unspecified"),
    ("fe80::1", False, "link-local"),
    ("fc00::1", False, "unique local"),
    ("fd12:3456::1", False, "unique local"),
    ("2001:db8::1", False, "documentation"),
    ("100::1", False, "discard"),
    ("ff02::1", False, "multicast"),
    ("ff0e::1", False, "global-scope multicast"),
    ("fec0::1", False, "site-local (deprecated, still routed inside)"),
    ("feff:ffff::1", False, "site-local, top of fec0::/10"),
    # NAT64 well-known prefix 64:ff9b::/96 (RFC 6052): judged by the IPv4 inside
    ("64:ff9b::7f00:1", False, "NAT64 of 127.0.0.1"),
    ("64:ff9b::10.0.0.5", False, "NAT64 of 10.0.0.5"),
    ("64:ff9b::a9fe:a9fe", False, "NAT64 of 169.254.169.254"),
    ("64:ff9b::c0a8:101", False, "NAT64 of 192.168.1.1"),
    ("64:ff9b::93.184.216.34", True, "NAT64 of a public address"),
    ("64:ff9b:1::a00:5", False, "local-use NAT64 prefix (RFC 8215): refused"),
    ("64:ff9b:1:ffff::5db8:d822", False, "local-use NAT64 prefix, public inside: refused"),
    # 6to4 2002::/16 (RFC 3056): the IPv4 is in bits 16-48
    ("2002:7f00:1::", False, "6to4 of 127.0.0.1"),
    ("2002:a00:5::1", False, "6to4 of 10.0.0.5"),
    ("2002:c0a8:101::1", False, "6to4 of 192.168.1.1"),
    ("2002:5db8:d822::1", True, "6to4 of a public address"),
    # IPv4-compatible ::a.b.c.d (deprecated)
    ("::127.0.0.1", False, "IPv4-compatible loopback"),
    ("::10.0.0.5", False, "IPv4-compatible private"),
    ("::169.254.169.254", False, "IPv4-compatible link-local"),
    ("::93.184.216.34", True, "IPv4-compatible public"),
    # IPv4-mapped ::ffff:a.b.c.d
    ("::ffff:127.0.0.1", False, "mapped loopback"),
    ("::ffff:10.0.0.5", False, "mapped private"),
    ("::ffff:100.64.0.1", False, "mapped CGN"),
    ("::ffff:224.0.0.1", False, "mapped multicast"),
    ("::ffff:93.184.216.34", True, "mapped public"),
    # IPv4-translated ::ffff:0:a.b.c.d (SIIT)
    ("::ffff:0:127.0.0.1", False, "translated loopback"),
    ("::ffff:0:10.0.0.5", False, "translated private"),
    ("::ffff:0:93.184.216.34", True, "translated public"),
    # Teredo 2001::/32: the client address is obfuscated: refused whole
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False, "Teredo"),
    ("2001:0:5db8:d822::1", False, "Teredo with a public server address"),
    # not an address
    ("mx.example.com", False, "a name, not an address"),
    ("", False, "empty"),
    ("fe80::1%eth0", False, "scoped"),
]


@pytest.mark.parametrize(("address", "public", "why"), TABLE, ids=[row[0] for row in TABLE])
def test_public_address_table(address: str, public: bool, why: str) -> None:
    assert is_public_address(address) is public, why


@pytest.mark.parametrize(
    ("address", "inner"),
    [
        ("64:ff9b::7f00:1", "127.0.0.1"),
        ("2002:a00:5::1", "10.0.0.5"),
        ("::10.0.0.5", "10.0.0.5"),
        ("::ffff:192.168.1.1", "192.168.1.1"),
        ("::ffff:0:172.16.0.1", "172.16.0.1"),
        ("2a00:1450:4001:80b::200e", None),
        ("fd00::10.0.0.5", None),
    ],
)
def test_embedded_ipv4(address: str, inner: str | None) -> None:
    import ipaddress

    found = embedded_ipv4(ipaddress.IPv6Address(address))
    assert (str(found) if found else None) == inner


async def test_mx_on_nat64_of_an_internal_host_is_refused(dns: DnsServer) -> None:
    """Through the real resolver path: an MX whose only address is NAT64 of 10.0.0.5."""
    dns.load(
        "nat64.test. MX 10 mx.nat64.test.\n"
        "mx.nat64.test. AAAA 64:ff9b::a00:5\n"
        "sixtofour.test. MX 10 mx.sixtofour.test.\n"
        "mx.sixtofour.test. AAAA 2002:7f00:1::1\n"
        "mixed.test. MX 10 mx.mixed.test.\n"
        "mx.mixed.test. AAAA ::ffff:10.0.0.5\n"
        f"mx.mixed.test. AAAA 64:ff9b::{PUBLIC_V4}\n"
    )
    resolver = make_resolver(dns.settings())
    for domain in ("nat64.test", "sixtofour.test"):
        with pytest.raises(PermanentRouteError) as caught:
            await resolve_hops(domain, routes={}, mx_port=25, resolver=resolver, public_only=True)
        assert caught.value.status == "5.4.4"
    (hop,) = await resolve_hops(
        "mixed.test", routes={}, mx_port=25, resolver=resolver, public_only=True
    )
    assert hop.addresses == ("64:ff9b::5db8:d822",)
