"""Mail addresses: the one place that splits them and normalises their domains.

Every part of the relay that needs "the domain of this address" asks here, so that a job, a
quota, an identity, an SPF check and a DKIM key all see `Bob@EXAMPLE.com.`,
`bob@example.com` and `bob@xn--bcher-kva.de`/`bob@bücher.de` the same way:

- the domain is lower-cased, loses a trailing dot, and a UTF-8 (U-label) domain becomes its
  ASCII (A-label, IDNA) form, as DNS knows it; a domain literal (`[192.0.2.1]`) is kept;
- the local part is kept as given (RFC 5321: only the destination may read it);
- the null sender (`<>`, or empty as it is stored) has no domain.

`is_mailbox` says whether an envelope address is one we relay (pure; aiosmtpd is lenient).
"""

from __future__ import annotations

import re

__all__ = [
    "NULL_SENDER",
    "domain_of",
    "domain_text",
    "is_mailbox",
    "is_null_sender",
    "local_part",
    "normalise_domain",
]

NULL_SENDER = "<>"
"""How the null reverse-path is written; stored as ""."""

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


def is_null_sender(address: str) -> bool:
    """`<>` as given at MAIL FROM, or "" as stored: mail that never causes a notice."""
    return address.strip() in ("", NULL_SENDER)


def is_mailbox(address: str) -> bool:
    """True for `local@domain` as RFC 5321 allows it (UTF-8 allowed, SMTPUTF8)."""
    if len(address) > 320 or _UNDECODABLE.search(address):
        return False
    local, at, domain = address.rpartition("@")
    return bool(at) and bool(_LOCAL.fullmatch(local)) and bool(_DOMAIN.fullmatch(domain))


def local_part(address: str) -> str:
    """What comes before the last `@` ("" without one)."""
    return address.rpartition("@")[0]


def domain_text(address: str) -> str:
    """The domain as the client wrote it, for messages to that client ("" without an `@`)."""
    _, at, domain = address.strip().rpartition("@")
    return domain if at else ""


def normalise_domain(domain: str) -> str:
    """`EXAMPLE.com.` → `example.com`, `Bücher.de` → `xn--bcher-kva.de`. A name that IDNA
    refuses (an empty label, a label over 63 characters) is kept lower-cased: whether it is
    a domain at all is for the caller to decide (DNS answers no, a check refuses it)."""
    name = domain.strip().lower().rstrip(".")
    if name.startswith("[") or name.isascii():
        return name
    try:
        return name.encode("idna").decode("ascii")
    except UnicodeError:
        return name


def domain_of(address: str) -> str:
    """The normalised domain of an address ("" for the null sender or without an `@`)."""
    return normalise_domain(domain_text(address))
