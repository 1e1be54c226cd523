"""The domains and IPs a message links to, for domain blocklists (SURBL style).

Text and HTML parts are decoded (quoted-printable, base64, charsets) by the email package;
hosts are reduced to their registrable domain with the public suffix list shipped in the
`publicsuffixlist` package (offline). Bounded in parts, bytes, URIs and time per message.
"""

from __future__ import annotations

import email
import email.policy
import ipaddress
import re
import time
from dataclasses import dataclass
from email.message import EmailMessage
from urllib.parse import urlsplit

from publicsuffixlist import PublicSuffixList

__all__ = ["Links", "extract_links", "registrable_domain"]

_PSL = PublicSuffixList()
_URI = re.compile(
    r"""(?:https?://|ftp://|www\.)(?:\[[0-9a-f:.]+\])?[^\s"'<>()\[\]{}\\^`|]*""",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Links:
    domains: tuple[str, ...]
    ips: tuple[str, ...]
    truncated: bool = False
    """True when a bound (parts, bytes, URIs, time) stopped the scan early."""


def registrable_domain(host: str) -> str | None:
    """`www.shop.example.co.uk` → `example.co.uk`; None for a bare suffix or junk."""
    host = host.strip().strip(".").lower()
    if not host or len(host) > 253:
        return None
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        return None
    suffix = _PSL.privatesuffix(host)
    return str(suffix) if suffix else None


def _host(uri: str) -> str | None:
    if uri[:4].lower() == "www.":
        uri = "http://" + uri
    try:
        return urlsplit(uri).hostname
    except ValueError:
        return None


def _text_of(part: object) -> str:
    """The decoded text of a part; raw bytes as latin-1 when its charset or encoding is bad."""
    assert isinstance(part, EmailMessage)
    try:
        return str(part.get_content())
    except (LookupError, ValueError):
        raw = part.get_payload(decode=True)
        return raw.decode("latin-1") if isinstance(raw, bytes) else str(raw or "")


def extract_links(
    message: bytes,
    *,
    max_parts: int = 50,
    max_part_bytes: int = 2_000_000,
    max_links: int = 100,
    max_seconds: float = 0.5,
) -> Links:
    deadline = time.monotonic() + max_seconds
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    domains: dict[str, None] = {}
    ips: dict[str, None] = {}
    truncated = False
    for n, part in enumerate(parsed.walk()):
        if n >= max_parts or time.monotonic() > deadline:
            truncated = True
            break
        if part.get_content_maintype() != "text" or part.get_content_subtype() not in (
            "plain",
            "html",
        ):
            continue
        text = _text_of(part)[:max_part_bytes]
        for match in _URI.finditer(text):
            if len(domains) + len(ips) >= max_links or time.monotonic() > deadline:
                truncated = True
                break
            host = _host(match.group(0))
            if not host:
                continue
            try:
                ips[str(ipaddress.ip_address(host))] = None
                continue
            except ValueError:
                pass
            domain = registrable_domain(host)
            if domain:
                domains[domain] = None
    return Links(tuple(domains), tuple(ips), truncated)
