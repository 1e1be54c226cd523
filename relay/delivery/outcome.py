"""Pure classification of SMTP replies and delivery errors into recipient outcomes.

No I/O here: the client feeds replies and exceptions in, retry and bounce logic reads the
outcomes. Errors that carry no SMTP reply (refused connection, timeout, TLS failure) get the
synthetic code 451 and an RFC 3463 status that says what went wrong.
"""

from __future__ import annotations

import re
import ssl

import aiosmtplib

from relay.delivery.errors import PermanentRouteError, RouteError, TlsPolicyFailure
from relay.outcomes import Disposition, RecipientOutcome

__all__ = [
    "LOCAL_TRANSIENT_CODE",
    "Disposition",
    "RecipientOutcome",
    "classify_exception",
    "classify_reply",
    "is_block_like",
    "split_status",
]

LOCAL_TRANSIENT_CODE = 451
"""Code given to failures without a server reply (connect, timeout, TLS)."""

_STATUS = re.compile(r"\s*([245])\.(\d{1,3})\.(\d{1,3})(?:\s+|$)")
_BLOCK_WORDS = re.compile(r"block|listed|spam|blacklist|reputation", re.IGNORECASE)


def classify_reply(code: int, message: str) -> Disposition:
    """2xx delivered, 5xx permanent; 4xx and anything unexpected are retried."""
    if 200 <= code < 300:
        return Disposition.DELIVERED
    if 500 <= code < 600:
        return Disposition.PERMANENT
    return Disposition.TRANSIENT


def split_status(code: int, message: str) -> tuple[str, str]:
    """(enhanced status, text) of a reply; the status defaults by reply class.

    A status whose class differs from the reply's is not trusted (RFC 3463 section 2); a
    reply that is neither 2xx, 4xx nor 5xx counts as transient, like in `classify_reply`.
    """
    reply_class = str(code // 100) if code // 100 in (2, 4, 5) else "4"
    match = _STATUS.match(message)
    if not match or match.group(1) != reply_class:
        return f"{reply_class}.0.0", " ".join(line.strip() for line in message.splitlines())
    status = ".".join(match.groups())
    lines = []
    for line in message.splitlines():
        same = _STATUS.match(line)  # multiline replies repeat the status on every line
        if same and ".".join(same.groups()) == status:
            line = line[same.end() :]
        if line.strip():
            lines.append(line.strip())
    return status, " ".join(lines)


def classify_exception(exc: BaseException) -> tuple[Disposition, int, str, str]:
    """(disposition, code, status, text) for an error of a delivery attempt.

    Transient unless the server answered 5xx or the route is permanently unusable.
    """
    if isinstance(exc, RouteError):
        disposition = (
            Disposition.PERMANENT if isinstance(exc, PermanentRouteError) else Disposition.TRANSIENT
        )
        return disposition, exc.code, exc.status, str(exc)
    if isinstance(exc, TlsPolicyFailure):
        return _local(exc.status, str(exc))
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        refusals = exc.recipients
        if not refusals:
            return _local("4.0.0", "all recipients refused")
        transient = [
            r for r in refusals if classify_reply(r.code, r.message) is not Disposition.PERMANENT
        ]
        return classify_exception((transient or refusals)[0])
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        disposition = classify_reply(exc.code, exc.message)
        if disposition is Disposition.DELIVERED:  # raised for an unexpected 2xx: retry
            return _local("4.0.0", f"unexpected reply: {exc.code} {exc.message}".strip())
        status, text = split_status(exc.code, exc.message)
        return disposition, exc.code, status, text
    if isinstance(exc, aiosmtplib.SMTPConnectTimeoutError):
        return _local("4.4.1", _describe(exc, "connection timed out"))
    if isinstance(exc, TimeoutError):  # includes SMTPReadTimeoutError, asyncio.TimeoutError
        return _local("4.4.2", _describe(exc, "timed out"))
    if isinstance(exc, ssl.SSLError):
        return _local("4.7.5", f"TLS failure: {_describe(exc, 'handshake failed')}")
    if isinstance(exc, aiosmtplib.SMTPConnectError | ConnectionRefusedError):
        return _local("4.4.1", _describe(exc, "connection refused"))
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected | ConnectionError):
        return _local("4.4.2", _describe(exc, "connection lost"))
    if isinstance(exc, OSError):
        return _local("4.4.0", _describe(exc, "network error"))
    return _local("4.0.0", _describe(exc, "delivery failed"))


def is_block_like(code: int, message: str) -> bool:
    """Does the reply look like a block of the sending IP (so another IP may do better)?"""
    if code == 421:
        return True
    status, text = split_status(code, message)
    if status.startswith("4.7."):
        return True
    if code == 554 or status.startswith("5.7."):
        return _BLOCK_WORDS.search(text) is not None
    return False


def _local(status: str, text: str) -> tuple[Disposition, int, str, str]:
    return Disposition.TRANSIENT, LOCAL_TRANSIENT_CODE, status, text


def _describe(exc: BaseException, fallback: str) -> str:
    text = str(exc).strip()
    return text or f"{fallback} ({type(exc).__name__})"
