"""Next hops for a destination domain: a static route, or MX records (RFC 5321 section 5.1).

Addresses are resolved here, through the relay's own resolver, so that the client never
falls back to the system resolver for an MX host, and a host whose name does not resolve
is skipped before any connection attempt.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
from dataclasses import dataclass
from typing import TypeVar, overload

import dns.exception
import dns.name
import dns.resolver
from dns.asyncresolver import Resolver as AsyncResolver
from dns.nameserver import Do53Nameserver
from dns.resolver import BaseResolver, NoResolverConfiguration

from relay.config import DnsSettings, HostPort
from relay.delivery.dns_cache import CoalescingResolver, DnsCache
from relay.delivery.errors import PermanentRouteError, TransientRouteError
from relay.delivery.public_ip import is_public_address
from relay.errors import ConfigError

R = TypeVar("R", bound=dns.resolver.BaseResolver)

__all__ = ["Hop", "make_resolver", "resolve_hops"]


@dataclass(frozen=True)
class Hop:
    host: str
    """MX host name (or the static route's host), without the final dot."""
    port: int
    preference: int
    addresses: tuple[str, ...] = ()
    """IPv4 before IPv6; empty for a static route: the client connects by name."""


async def resolve_hops(
    domain: str,
    *,
    routes: dict[str, HostPort],
    mx_port: int,
    resolver: AsyncResolver,
    rng: random.Random | None = None,
    public_only: bool = False,
) -> list[Hop]:
    """Hops to try in order: best preference first, equal preferences in random order.

    Raises PermanentRouteError when the domain cannot receive mail and TransientRouteError
    when DNS fails or no MX host resolves. `public_only`: MX addresses that are not public
    (loopback, private, link-local…) are dropped, so a customer's DNS cannot point our egress
    IPs at the provider's internal network; static routes are trusted.
    """
    name = domain.strip().lower().rstrip(".")
    route = routes.get(name) or routes.get("*")
    if route is not None:
        return [Hop(route.host, route.port, 0)]
    try:
        qname = dns.name.from_text(name)
    except dns.exception.DNSException:
        qname = dns.name.root
    if not name or qname == dns.name.root:
        raise PermanentRouteError(f"{domain!r}: not a domain name", status="5.1.2", code=550)
    try:
        answer = await resolver.resolve(qname, "MX", search=False)
    except dns.resolver.NXDOMAIN:
        raise PermanentRouteError(f"{name}: domain does not exist", status="5.1.2") from None
    except dns.resolver.NoAnswer:
        return [await _implicit_mx(name, qname, mx_port, resolver, public_only)]
    except dns.exception.DNSException as exc:
        raise _dns_failure(name, "MX", exc) from None

    records = [(int(r.preference), r.exchange) for r in answer]
    real = [(pref, host) for pref, host in records if host != dns.name.root]
    if not real:  # RFC 7505: "MX 0 ." says the domain accepts no mail
        raise PermanentRouteError(
            f"{name}: domain accepts no mail (null MX)", status="5.1.10", code=556
        )
    shuffle = (rng or random).random
    real.sort(key=lambda record: (record[0], shuffle()))

    lookups = await asyncio.gather(
        *(_addresses(host, resolver) for _, host in real), return_exceptions=True
    )
    hops, failures, internal = [], [], []
    for (pref, host), found in zip(real, lookups, strict=True):
        if isinstance(found, BaseException):
            if not isinstance(found, dns.exception.DNSException):
                raise found
            failures.append(f"{_text(host)}: {_reason(found)}")
        elif found and public_only and not _public(found):
            internal.append(_text(host))
        elif found:
            hops.append(Hop(_text(host), mx_port, pref, _public(found) if public_only else found))
    if hops:
        return hops
    if internal and not failures:
        raise PermanentRouteError(
            f"{name}: MX hosts resolve only to non-public addresses ({', '.join(internal)})",
            status="5.4.4",
        )
    if failures:
        raise TransientRouteError(
            f"{name}: no MX host resolves ({'; '.join(failures)})", status="4.4.3"
        )
    hosts = ", ".join(_text(host) for _, host in real)
    raise TransientRouteError(f"{name}: no MX host has an address ({hosts})", status="4.4.4")


@overload
def make_resolver(dns: DnsSettings, *, cache: DnsCache | None = None) -> AsyncResolver: ...
@overload
def make_resolver(dns: DnsSettings, kind: type[R], cache: DnsCache | None = None) -> R: ...
def make_resolver(
    dns: DnsSettings, kind: type[BaseResolver] = AsyncResolver, cache: DnsCache | None = None
) -> BaseResolver:
    """A resolver for `dns.servers`, or the system's when the list is empty. `kind`: the
    async resolver of the service, or the blocking one a blocking library needs (pyspf).
    `cache`: the process's answer cache (delivery shares one; DNSBL lookups keep their own)."""
    if cache is not None and kind is AsyncResolver:
        kind = CoalescingResolver  # one query for many callers
    if dns.servers:
        resolver = kind(configure=False)
        for server in dns.servers:
            try:
                ipaddress.ip_address(server.host)
            except ValueError:
                raise ConfigError(f"dns.servers: not an IP address: {server}") from None
        resolver.nameservers = [Do53Nameserver(s.host, port=s.port) for s in dns.servers]
    else:
        try:
            resolver = kind()
        except NoResolverConfiguration:
            raise ConfigError("dns.servers: empty, and the system has no resolvers") from None
    resolver.lifetime = dns.timeout.seconds
    resolver.cache = cache
    resolver.timeout = min(resolver.timeout, dns.timeout.seconds)
    return resolver


async def _implicit_mx(
    name: str, qname: dns.name.Name, mx_port: int, resolver: AsyncResolver, public_only: bool
) -> Hop:
    try:
        found = await _addresses(qname, resolver)
    except dns.exception.DNSException as exc:
        raise _dns_failure(name, "A/AAAA", exc) from None
    if not found:
        raise PermanentRouteError(f"{name}: no MX and no address record", status="5.4.4")
    if public_only and not _public(found):
        raise PermanentRouteError(f"{name}: resolves only to non-public addresses", status="5.4.4")
    return Hop(_text(qname), mx_port, 0, _public(found) if public_only else found)


def _public(addresses: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(a for a in addresses if is_public_address(a))


async def _addresses(host: dns.name.Name, resolver: AsyncResolver) -> tuple[str, ...]:
    """A then AAAA addresses; () when the name does not exist or has neither."""
    results = await asyncio.gather(
        resolver.resolve(host, "A", search=False),
        resolver.resolve(host, "AAAA", search=False),
        return_exceptions=True,
    )
    found: list[str] = []
    errors: list[BaseException] = []
    for result in results:
        if isinstance(result, dns.resolver.NXDOMAIN | dns.resolver.NoAnswer):
            continue
        if isinstance(result, BaseException):
            if not isinstance(result, dns.exception.DNSException):
                raise result
            errors.append(result)
        else:
            found.extend(rdata.to_text() for rdata in result)
    if not found and errors:
        raise errors[0]
    return tuple(found)


def _dns_failure(name: str, rdtype: str, exc: BaseException) -> TransientRouteError:
    return TransientRouteError(f"{name}: {rdtype} lookup failed: {_reason(exc)}", status="4.4.3")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, dns.exception.Timeout):
        return "timeout"
    if isinstance(exc, dns.resolver.NoNameservers):
        return "server failure"
    if isinstance(exc, dns.resolver.NXDOMAIN | dns.resolver.NoAnswer):
        return "no address"
    return str(exc) or type(exc).__name__


def _text(host: dns.name.Name) -> str:
    return host.to_text(omit_final_dot=True).lower()
