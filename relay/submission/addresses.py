"""Envelope address checks, pure. aiosmtpd's parser is lenient; this is what we relay."""

from __future__ import annotations

import re

__all__ = ["is_mailbox"]

# local@domain, no whitespace or angle brackets, a dotted-or-single-label domain or literal.
_DOMAIN = re.compile(r"(?:[^\s@<>()\[\],;:\\\".]+\.)*[^\s@<>()\[\],;:\\\".]+\.?|\[[0-9A-Fa-f:.]+\]")
_LOCAL = re.compile(r"[^\s@<>()\[\],;:\\]+|\"(?:[^\"\\\r\n]|\\.)*\"")


def is_mailbox(address: str) -> bool:
    """True for `local@domain` as RFC 5321 allows it (UTF-8 allowed, SMTPUTF8)."""
    if len(address) > 320:
        return False
    local, at, domain = address.rpartition("@")
    return bool(at) and bool(_LOCAL.fullmatch(local)) and bool(_DOMAIN.fullmatch(domain))
