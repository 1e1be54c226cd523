"""Is a webhook URL one we may post to? Checked like an MX address (relay.delivery.public_ip).

A customer chooses the URL: without this check, our dispatcher would be a way to reach
internal services (metadata endpoints, the Redis host, an admin page on loopback) from
inside the network. The host is resolved and every address must be public, at `add` and
again before each POST (DNS may change), unless `webhooks.allow_private_targets` is on.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from relay.delivery.public_ip import is_public_address
from relay.events.errors import BadTarget

__all__ = ["check_target", "parse_target"]


def parse_target(url: str) -> tuple[str, int]:
    """(host, port) of an http(s) URL without credentials; raises BadTarget."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise BadTarget(f"not a URL: {url[:100]!r} ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadTarget(f"not an http(s) URL: {url[:100]!r}")
    if parts.username or parts.password:
        raise BadTarget("a webhook URL carries no credentials (the signature authenticates us)")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


async def check_target(url: str, *, allow_private: bool) -> None:
    """Raises BadTarget when the URL is not http(s), does not resolve, or resolves to an
    address that is not public (and private targets are not allowed)."""
    host, port = parse_target(url)
    if allow_private:
        return
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except (socket.gaierror, UnicodeError) as exc:
            raise BadTarget(f"{host} does not resolve: {exc}") from None
        addresses = sorted({str(info[4][0]) for info in infos})
    for address in addresses:
        if not is_public_address(address.split("%", 1)[0]):
            raise BadTarget(
                f"{host} resolves to {address}, which is not a public address"
                " (webhooks.allow_private_targets is off)"
            )
