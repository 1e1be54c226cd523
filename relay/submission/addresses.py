"""Envelope address checks, pure. aiosmtpd's parser is lenient; this is what we relay."""

from __future__ import annotations

import re

__all__ = ["is_mailbox"]

# local@domain, no whitespace or angle brackets, a dotted-or-single-label domain or literal.
# No control characters anywhere (NUL, DEL, ...): RFC 5321 allows none, unquoted or quoted.
_DOMAIN = re.compile(
    r"(?:[^\s\x00-\x1f\x7f@<>()\[\],;:\\\".]+\.)*[^\s\x00-\x1f\x7f@<>()\[\],;:\\\".]+\.?"
    r"|\[[0-9A-Fa-f:.]+\]"
)
_LOCAL = re.compile(
    r"[^\s\x00-\x1f\x7f@<>()\[\],;:\\]+|\"(?:[^\"\\\x00-\x1f\x7f]|\\[\x20-\x7e])*\""
)

# Bytes that were not UTF-8 arrive as lone surrogates (aiosmtpd decodes with surrogateescape).
_UNDECODABLE = re.compile("[\ud800-\udfff]")


def is_mailbox(address: str) -> bool:
    """True for `local@domain` as RFC 5321 allows it (UTF-8 allowed, SMTPUTF8)."""
    if len(address) > 320 or _UNDECODABLE.search(address):
        return False
    local, at, domain = address.rpartition("@")
    return bool(at) and bool(_LOCAL.fullmatch(local)) and bool(_DOMAIN.fullmatch(domain))
