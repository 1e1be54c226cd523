"""An HTTP send request (JSON) as an envelope and an RFC 5322 message: pure.

Everything a client could use to smuggle a header or an envelope address (line breaks in a
subject, an address or a header value; a header we set ourselves) is refused with the field
named, so the API answers `422` saying which field is wrong. The MIME structure is the one
the standard library's `email.mime` classes and compat32 generator write, byte for byte (a
test compares them, but for the random boundaries): text and/or HTML as alternatives (7bit
when ASCII, else quoted-printable UTF-8), attachments base64-encoded with their type and
name, non-ASCII names and subjects encoded (RFC 2047, RFC 2231), lines ending in CRLF. It is
written here (`_Entity`) rather than by those classes: they took 0.15 ms of the ~1.5 ms a
5 KB message costs (0.4 ms with HTML), most of the HTTP API's cost over SMTP (bench/apps.py),
against 0.02 ms (0.08 ms). Header lines still go through compat32's folding when they need
folding.
"""

from __future__ import annotations

import base64
import binascii
import email.policy
import email.quoprimime
import email.utils
import random
import re
import sys
from dataclasses import dataclass
from email.header import Header
from email.parser import BytesHeaderParser
from typing import Any

from relay.address import is_mailbox
from relay.errors import InvalidInput

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
_LINE_BREAK = re.compile("[\r\n\x00\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
"""NUL and what Python's `str.splitlines` breaks at: the header folding of the standard
library turns each of these into a new line (a header of the client's making, or an error)."""
_PLAIN_LINE = re.compile(r"[\t\x20-\x7e]*")
_BARE_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+")
"""An address written alone, with nothing `parseaddr` would read differently."""


class _Wire(email.policy.Compat32):
    """compat32 with CRLF line ends, which writes a header line that needs no folding
    (printable ASCII, 78 characters at most) as it is: the standard library's folding
    (`Header.encode`) gives the same bytes for it (a property test says so) and was a third
    of a composition's cost."""

    def fold_binary(self, name: str, value: Any) -> bytes:
        if isinstance(value, str) and len(name) + len(value) <= 76 and _PLAIN_LINE.fullmatch(value):
            return f"{name}: {value}\r\n".encode("ascii")
        return super().fold_binary(name, value)


_WIRE = _Wire(linesep="\r\n")
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
    if _BARE_ADDRESS.fullmatch(shown) and is_mailbox(shown):
        return shown, shown  # what parseaddr gives for it, without its parser's cost
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
    try:
        return _compose(data)
    except UnicodeEncodeError:  # JSON may carry "\ud800", which no encoding writes
        raise FieldError("body", "holds a lone surrogate (\\ud800-\\udfff), not text") from None


def _compose(data: object) -> ComposedMessage:
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
    headers = [("From", _address_header(sender_shown))]
    if to:
        headers.append(("To", ", ".join(_address_header(shown) for shown, _ in to)))
    if cc:
        headers.append(("Cc", ", ".join(_address_header(shown) for shown, _ in cc)))
    headers.append(("Subject", _header_text(subject)))
    headers += [(name, _header_text(value)) for name, value in _headers(data)]
    headers.append(("MIME-Version", "1.0"))
    parts = [_text_part(text, "plain")] if text else []
    if html:
        parts.append(_text_part(html, "html"))
    body = parts[0] if len(parts) == 1 else _multipart("alternative", parts)
    attachments = _attachments(data)
    if attachments:
        body = _multipart("mixed", [body] + [_attachment(*a) for a in attachments])
    recipients = [("to", a) for _, a in to] + [("cc", a) for _, a in cc]
    return ComposedMessage(
        sender, tuple(recipients + [("bcc", a) for _, a in bcc]), body.as_bytes(headers)
    )


def _address_header(shown: str) -> str:
    """`Name <addr>` as a header carries it: a non-ASCII name RFC 2047-encoded."""
    if shown.isascii():
        return shown
    name, address = email.utils.parseaddr(shown)
    return email.utils.formataddr((name, address), charset="utf-8")


def _header_text(value: str) -> str:
    return value if value.isascii() else Header(value, "utf-8").encode()


@dataclass(frozen=True)
class _Entity:
    """A MIME entity as the standard library's `email.mime` classes and generator (compat32,
    CRLF) write it, byte for byte (a test compares them), without their cost: composing a
    5 KB message with them took 0.15 ms, most of the API's cost over SMTP's.
    `body`: the encoded body (line ends as they come) or the parts of a multipart."""

    headers: tuple[tuple[str, str], ...]
    body: str | tuple[_Entity, ...]

    def as_bytes(self, before: list[tuple[str, str]] | None = None) -> bytes:
        """Header lines (`before` first), a blank line, the body, with CRLF line ends."""
        headers = [*(before or ()), *self.headers]
        if isinstance(self.body, str):
            content = _crlf(self.body).encode("ascii")
        else:
            parts = [part.as_bytes() for part in self.body]
            boundary = _boundary(b"\r\n".join(parts))
            headers = [
                (name, f'{value}; boundary="{boundary}"' if name == "Content-Type" else value)
                for name, value in headers
            ]
            delimiter = f"--{boundary}\r\n".encode()
            content = (
                delimiter + (b"\r\n" + delimiter).join(parts) + f"\r\n--{boundary}--\r\n".encode()
            )
        return (
            b"".join(_WIRE.fold_binary(name, value) for name, value in headers) + b"\r\n" + content
        )


def _crlf(text: str) -> str:
    """Every line end (CRLF, CR, LF) as CRLF."""
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n")


def _boundary(text: bytes) -> str:
    """A multipart boundary (as the standard library makes them) that `text` never holds."""
    while True:
        boundary = f"{'=' * 15}{random.randrange(sys.maxsize):019d}=="
        if boundary.encode() not in text:
            return boundary


def _text_part(content: str, subtype: str) -> _Entity:
    """ASCII with short lines as 7bit; anything else quoted-printable UTF-8 (readable, and
    safe through any hop)."""
    content = content.replace("\r\n", "\n")
    if content.isascii() and max(map(len, content.split("\n"))) <= 998:
        charset, encoding, body = "us-ascii", "7bit", content
    else:
        charset, encoding = "utf-8", "quoted-printable"
        # as email.charset.Charset.body_encode does it for UTF-8 with quoted-printable
        body = email.quoprimime.body_encode(content.encode().decode("latin-1"))
    content_type = f'text/{subtype}; charset="{charset}"'
    return _Entity((("Content-Type", content_type), ("Content-Transfer-Encoding", encoding)), body)


def _attachment(raw: bytes, maintype: str, subtype: str, name: str) -> _Entity:
    if not name:
        filename = "filename"
    elif name.isascii():
        filename = f'filename="{email.utils.quote(name)}"'
    else:
        filename = f"filename*={email.utils.encode_rfc2231(name, 'utf-8', '')}"
    headers = (
        ("Content-Type", f"{maintype}/{subtype}"),
        ("Content-Transfer-Encoding", "base64"),
        ("Content-Disposition", f"attachment; {filename}"),
    )
    return _Entity(headers, base64.encodebytes(raw).decode("ascii"))


def _multipart(subtype: str, parts: list[_Entity]) -> _Entity:
    return _Entity((("Content-Type", f"multipart/{subtype}"),), tuple(parts))


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
