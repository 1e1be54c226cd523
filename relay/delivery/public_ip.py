"""Is an MX address one we may deliver to? The private-destination check, as a pure function.

`ipaddress`'s `is_global` is not enough on its own: several IPv6 forms carry an IPv4 address
inside them (NAT64, 6to4, IPv4-compatible and -mapped, SIIT), and a router that translates or
tunnels them delivers to that IPv4 address. A customer's DNS could then aim our egress at
`64:ff9b::10.0.0.5` or `2002:7f00:1::` and reach an internal host through a public-looking
IPv6 address. So the embedded IPv4 address is extracted and judged instead; prefixes whose
embedded address cannot be read reliably (Teredo obfuscates it, local-use NAT64 puts it where
the operator chose) are refused whole, as are deprecated site-local and multicast addresses.
"""

from __future__ import annotations

import ipaddress
from ipaddress import IPv4Address, IPv6Address, IPv6Network

__all__ = ["embedded_ipv4", "is_public_address"]

# IPv6 prefixes whose last 32 bits are an IPv4 address that the packet ends up at.
_LOW32_PREFIXES = (
    IPv6Network("64:ff9b::/96"),  # NAT64 well-known prefix (RFC 6052)
    IPv6Network("::ffff:0:0/96"),  # IPv4-mapped (RFC 4291 2.5.5.2)
    IPv6Network("::ffff:0:0:0/96"),  # IPv4-translated (RFC 2765 SIIT)
    IPv6Network("::/96"),  # IPv4-compatible, deprecated (RFC 4291 2.5.5.1); :: and ::1 too
)
# Refused whatever follows the prefix.
_REFUSED_PREFIXES = (
    IPv6Network("2001::/32"),  # Teredo (RFC 4380): the client IPv4 is obfuscated
    IPv6Network("64:ff9b:1::/48"),  # local-use NAT64 (RFC 8215): a private translator
    IPv6Network("fec0::/10"),  # site-local, deprecated (RFC 3879) but still routed internally
    IPv6Network("ff00::/8"),  # multicast: never an MX
)


def embedded_ipv4(address: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 address carries (NAT64, mapped, compatible, SIIT, 6to4)."""
    if address.sixtofour is not None:  # 2002:AABB:CCDD::/48 (RFC 3056)
        return address.sixtofour
    for prefix in _LOW32_PREFIXES:
        if address in prefix:
            return IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_public_address(text: str) -> bool:
    """True when mail may go to `text`: a global unicast address, whatever form it takes.

    Not an IP address at all: False (the caller asked about a destination it cannot judge).
    """
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    if isinstance(address, IPv6Address):
        if address.scope_id is not None or any(address in p for p in _REFUSED_PREFIXES):
            return False
        inner = embedded_ipv4(address)
        if inner is not None:
            return _public_ipv4(inner)
        return address.is_global
    return _public_ipv4(address)


def _public_ipv4(address: IPv4Address) -> bool:
    # is_global is True for multicast (224/4) on some Python versions; an MX is never one.
    return address.is_global and not address.is_multicast
