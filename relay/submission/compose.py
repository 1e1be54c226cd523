"""An HTTP send request (JSON) as an envelope and an RFC 5322 message: pure.

Everything a client could use to smuggle a header or an envelope address (line breaks in a
subject, an address or a header value; a header we set ourselves) is refused with the field
named, so the API answers `422` saying which field is wrong. The MIME structure comes from
the standard library (`email.message.EmailMessage`): text and/or HTML as alternatives,
attachments base64-encoded with their type and name, lines ending in CRLF.
"""

from __future__ import annotations

import base64
import binascii
import email.policy
import email.utils
import re
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from typing import Any

from relay.errors import InvalidInput
from relay.submission.addresses import is_mailbox

__all__ = ["ComposedMessage", "FieldError", "compose"]

_HEADER_NAME = re.compile(r"[!-9;-~]{1,76}")
_OURS = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "subject",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "content-disposition",
        "received",
        "dkim-signature",
        "return-path",
    }
)
"""Headers the request's own fields set, or that only the relay (or a receiver) writes."""
_LINE_BREAK = re.compile(r"[\r\n\x00]")
_SMTP = email.policy.SMTP.clone(max_line_length=998)
_MAX_ATTACHMENTS = 100


class FieldError(InvalidInput):
    """A request field that cannot be used: `field` names it, the message says why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


@dataclass(frozen=True)
class ComposedMessage:
    mail_from: str
    recipients: tuple[tuple[str, str], ...]
    """(field it came from: to/cc/bcc, address), in request order; each one counts."""
    content: bytes
    """The message, CRLF line endings, without Bcc."""


def _text(data: dict[str, Any], name: str, *, required: bool = False) -> str:
    value = data.get(name)
    if value is None:
        if required:
            raise FieldError(name, "is required")
        return ""
    if not isinstance(value, str):
        raise FieldError(name, "must be a string")
    return value


def _single_line(field: str, value: str) -> str:
    if _LINE_BREAK.search(value):
        raise FieldError(field, "must not contain line breaks or NUL")
    return value


def _mailbox(field: str, entry: object) -> tuple[str, str]:
    """(as the header shows it, the bare address)."""
    if not isinstance(entry, str) or not entry.strip():
        raise FieldError(field, "must be an address such as bob@example.com or 'Bob <bob@…>'")
    shown = _single_line(field, entry.strip())
    name, address = email.utils.parseaddr(shown)
    if not address or not is_mailbox(address) or (not name and shown.strip("<>") != address):
        raise FieldError(field, f"not one address: {shown[:100]!r}")
    return shown, address


def _mailboxes(data: dict[str, Any], field: str) -> list[tuple[str, str]]:
    value = data.get(field)
    if value is None:
        return []
    entries = [value] if isinstance(value, str) else value
    if not isinstance(entries, list):
        raise FieldError(field, "must be an address or a list of addresses")
    return [
        _mailbox(f"{field}[{n}]" if entries is value else field, e) for n, e in enumerate(entries)
    ]


def _headers(data: dict[str, Any]) -> list[tuple[str, str]]:
    value = data.get("headers") or {}
    if not isinstance(value, dict):
        raise FieldError("headers", "must be an object of header names to values")
    found = []
    for name, text in value.items():
        field = f"headers.{name}"
        if not _HEADER_NAME.fullmatch(str(name)):
            raise FieldError(field, "not a header name")
        if name.lower() in _OURS:
            raise FieldError(field, "is set by the request's own fields or by the relay")
        if not isinstance(text, str):
            raise FieldError(field, "must be a string")
        found.append((str(name), _single_line(field, text)))
    return found


def _attachments(data: dict[str, Any]) -> list[tuple[bytes, str, str, str]]:
    value = data.get("attachments") or []
    if not isinstance(value, list) or len(value) > _MAX_ATTACHMENTS:
        raise FieldError("attachments", f"must be a list of at most {_MAX_ATTACHMENTS} objects")
    found = []
    for n, item in enumerate(value):
        field = f"attachments[{n}]"
        if not isinstance(item, dict):
            raise FieldError(field, "must be an object with name, content_type and content")
        name = _single_line(f"{field}.name", _text(item, "name", required=True))
        ctype = _text(item, "content_type") or "application/octet-stream"
        maintype, slash, subtype = ctype.partition("/")
        if not slash or not _HEADER_NAME.fullmatch(maintype) or not _HEADER_NAME.fullmatch(subtype):
            raise FieldError(f"{field}.content_type", f"not a media type: {ctype[:60]!r}")
        try:
            raw = base64.b64decode(_text(item, "content", required=True), validate=True)
        except (binascii.Error, ValueError):
            raise FieldError(f"{field}.content", "not base64") from None
        found.append((raw, maintype.lower(), subtype.lower(), name))
    return found


def compose(data: object) -> ComposedMessage:
    """The message a JSON send request describes; raises FieldError."""
    if not isinstance(data, dict):
        raise FieldError("body", "must be a JSON object")
    if "raw" in data:
        return _raw(data)
    sender_shown, sender = _mailbox("from", data.get("from"))
    to, cc, bcc = (_mailboxes(data, f) for f in ("to", "cc", "bcc"))
    if not (to or cc or bcc):
        raise FieldError("to", "at least one recipient in to, cc or bcc")
    subject = _single_line("subject", _text(data, "subject"))
    text, html = _text(data, "text"), _text(data, "html")
    if not text and not html:
        raise FieldError("text", "give text, html or both")
    message = EmailMessage(policy=_SMTP)
    message["From"] = sender_shown
    if to:
        message["To"] = ", ".join(shown for shown, _ in to)
    if cc:
        message["Cc"] = ", ".join(shown for shown, _ in cc)
    message["Subject"] = subject
    for name, value in _headers(data):
        message[name] = value
    if text:
        message.set_content(text)
        if html:
            message.add_alternative(html, subtype="html")
    else:
        message.set_content(html, subtype="html")
    for raw, maintype, subtype, name in _attachments(data):
        message.add_attachment(raw, maintype=maintype, subtype=subtype, filename=name)
    recipients = [("to", a) for _, a in to] + [("cc", a) for _, a in cc]
    return ComposedMessage(
        sender, tuple(recipients + [("bcc", a) for _, a in bcc]), message.as_bytes(policy=_SMTP)
    )


_BCC = re.compile(rb"^bcc:.*(?:\r?\n[ \t].*)*\r?\n", re.IGNORECASE | re.MULTILINE)


def _raw(data: dict[str, Any]) -> ComposedMessage:
    """A whole RFC 5322 message (base64 in `raw`); the envelope from `from`/`to`/`cc`/`bcc`
    when given, else from its From:, To:, Cc: and Bcc: (Bcc: is then removed)."""
    try:
        content = base64.b64decode(_text(data, "raw", required=True), validate=True)
    except (binascii.Error, ValueError):
        raise FieldError("raw", "not base64") from None
    content = re.sub(rb"\r?\n", b"\r\n", content)
    head, sep, _ = content.partition(b"\r\n\r\n")
    if not sep:
        raise FieldError("raw", "no empty line between the header section and the body")
    headers = BytesHeaderParser(policy=email.policy.compat32).parsebytes(head + b"\r\n\r\n")
    if data.get("from") is not None:
        sender = _mailbox("from", data["from"])[1]
    else:
        addresses = email.utils.getaddresses(headers.get_all("From", []))
        if len(addresses) != 1 or not is_mailbox(addresses[0][1]):
            raise FieldError("raw", "needs one From: address (or give from)")
        sender = addresses[0][1]
    recipients: list[tuple[str, str]] = []
    if any(data.get(f) is not None for f in ("to", "cc", "bcc")):
        for field in ("to", "cc", "bcc"):
            recipients += [(field, a) for _, a in _mailboxes(data, field)]
    else:
        for field in ("to", "cc", "bcc"):
            for _, address in email.utils.getaddresses(headers.get_all(field, [])):
                if not is_mailbox(address):
                    raise FieldError("raw", f"{field.capitalize()}: has a bad address")
                recipients.append((field, address))
    if not recipients:
        raise FieldError("to", "at least one recipient in to, cc or bcc")
    return ComposedMessage(sender, tuple(recipients), _BCC.sub(b"", content))
