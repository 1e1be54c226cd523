"""The send API's message as the standard library's `email.mime` classes and generator write
it (how relay/submission/compose.py made it before it wrote the bytes itself): the reference
its output is compared with, byte for byte but for the random multipart boundaries."""

from __future__ import annotations

import email.charset
import email.policy
import re
from email import encoders
from email.message import Message
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from typing import Any, cast

from relay.submission import compose as composing

_WIRE = email.policy.compat32.clone(linesep="\r\n")
_UTF8_QP = email.charset.Charset("utf-8")
_UTF8_QP.body_encoding = email.charset.QP


def stdlib_content(data: dict[str, Any]) -> bytes:
    """The content `compose(data)` must give (data: a valid request, not `raw`)."""
    sender_shown, _ = composing._mailbox("from", data.get("from"))
    to, cc = (composing._mailboxes(data, f) for f in ("to", "cc"))
    headers = [("From", composing._address_header(sender_shown))]
    if to:
        headers.append(("To", ", ".join(composing._address_header(s) for s, _ in to)))
    if cc:
        headers.append(("Cc", ", ".join(composing._address_header(s) for s, _ in cc)))
    headers.append(("Subject", composing._header_text(data.get("subject") or "")))
    headers += [(n, composing._header_text(v)) for n, v in composing._headers(data)]
    text, html = data.get("text") or "", data.get("html") or ""
    parts = [_text_part(text, "plain")] if text else []
    if html:
        parts.append(_text_part(html, "html"))
    body: Message = parts[0] if len(parts) == 1 else _multipart("alternative", parts)
    attachments = composing._attachments(data)
    if attachments:
        body = _multipart("mixed", [body] + [_attachment(*a) for a in attachments])
    message = Message()
    for name, value in headers:
        message[name] = value
    message["MIME-Version"] = "1.0"
    for name, value in body.items():
        if name.lower() != "mime-version":
            message[name] = value
    message.set_payload(body.get_payload())
    return message.as_bytes(policy=_WIRE)


def _text_part(content: str, subtype: str) -> Message:
    content = content.replace("\r\n", "\n")
    if content.isascii() and all(len(line) <= 998 for line in content.split("\n")):
        return MIMEText(content, subtype, "us-ascii")
    return MIMEText(content, subtype, cast(str, _UTF8_QP))


def _attachment(raw: bytes, maintype: str, subtype: str, name: str) -> Message:
    part = MIMEBase(maintype, subtype)
    part.set_payload(raw)
    encoders.encode_base64(part)
    filename: str | tuple[str, str, str] = name if name.isascii() else ("utf-8", "", name)
    part.add_header("Content-Disposition", "attachment", filename=filename)
    return part


def _multipart(subtype: str, parts: list[Message]) -> Message:
    container = MIMEMultipart(subtype)
    for part in parts:
        del part["MIME-Version"]
        container.attach(part)
    return container


def same_but_boundaries(content: bytes) -> bytes:
    """`content` with each multipart boundary replaced by its rank."""
    found = re.findall(rb'boundary="([^"]+)"', content)
    for n, boundary in enumerate(dict.fromkeys(found)):
        content = content.replace(boundary, b"BOUNDARY%d" % n)
    return content
