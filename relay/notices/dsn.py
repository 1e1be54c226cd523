"""RFC 3464 delivery status notifications, composed as bytes: pure, no I/O.

A notice is a `multipart/report; report-type=delivery-status` with a human-readable part,
a machine-readable `message/delivery-status` part (one block per recipient), and the
original message (RET=FULL) or its headers. UTF-8 addresses or headers switch to the
RFC 6533 `message/global-*` types.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["Action", "NoticeMessage", "RecipientReport", "compose", "original_headers"]

Action = Literal["failed", "delayed", "delivered", "relayed"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_SUBJECTS = {
    "failed": "Undelivered Mail Returned to Sender",
    "delayed": "Delayed Mail (still being retried)",
    "relayed": "Successful Mail Delivery Report",
    "delivered": "Successful Mail Delivery Report",
}


@dataclass(frozen=True)
class RecipientReport:
    recipient: str
    action: Action
    status: str
    """RFC 3463 status, e.g. "5.1.1"; "4.4.7" for mail that ran out of time."""
    diagnostic: str
    """The reply, e.g. "550 5.1.1 no such user", or a local description."""
    remote_mta: str | None = None
    """The server that gave the reply; None for a local decision (DNS, expiry...)."""
    smtp_reply: bool = True
    """`diagnostic` is a remote SMTP reply (Diagnostic-Code: smtp; ...)."""
    orcpt: str | None = None
    """The ORCPT parameter, `type;address`, decoded."""
    last_attempt: float | None = None
    will_retry_until: float | None = None


@dataclass(frozen=True)
class NoticeMessage:
    """Everything a notice says; the caller decides which recipients it covers."""

    notice_id: str
    hostname: str
    """Reporting MTA and the domain of MAILER-DAEMON and Message-ID."""
    sender: str
    """The original envelope sender: the notice's recipient."""
    queue_id: str
    arrival: float
    now: float
    original: bytes
    reports: tuple[RecipientReport, ...]
    return_full: bool = False
    """RET=FULL (failures only): the whole message instead of its headers."""
    envid: str | None = None


def compose(notice: NoticeMessage) -> bytes:
    """The notice as a message, CRLF line ends, ready for the queue."""
    if not notice.reports:
        raise ValueError("a notice needs at least one recipient report")
    main = _main_action(notice.reports)
    boundary = f"{notice.notice_id}/{notice.hostname}"
    status_block = _delivery_status(notice)
    global_status = not _ascii(status_block)
    headers = original_headers(notice.original)
    full = notice.return_full and main == "failed"
    returned = notice.original.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") if full else headers

    lines = [
        f"From: Mail Delivery System <MAILER-DAEMON@{notice.hostname}>",
        f"To: <{_clean(notice.sender)}>",
        f"Subject: {_SUBJECTS[main]}",
        f"Date: {email.utils.formatdate(notice.now, usegmt=True)}",
        f"Message-ID: <{notice.notice_id}@{notice.hostname}>",
    ]
    if (original_id := _header_value(headers, b"message-id")) is not None:
        lines += [f"In-Reply-To: {original_id}", f"References: {original_id}"]
    lines += [
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status;",
        f'\tboundary="{boundary}"',
        "",
        "This is a MIME-encapsulated delivery status notification.",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "Content-Description: Notification",
        "",
        *_human_text(notice, main, full),
        "",
        f"--{boundary}",
        "Content-Type: message/"
        + ("global-delivery-status" if global_status else "delivery-status"),
        "Content-Description: Delivery report",
        *(["Content-Transfer-Encoding: 8bit"] if global_status else []),
        "",
        status_block,
        f"--{boundary}",
    ]
    if full:
        kind = "message/rfc822" if _ascii_bytes(headers) else "message/global"
        description = "Undelivered Message"
    else:
        kind = "text/rfc822-headers" if _ascii_bytes(headers) else "message/global-headers"
        description = "Undelivered Message Headers" if main == "failed" else "Message Headers"
    lines += [f"Content-Type: {kind}", f"Content-Description: {description}"]
    if not _ascii_bytes(returned):
        lines.append("Content-Transfer-Encoding: 8bit")
    head = "\r\n".join(lines).encode("utf-8") + b"\r\n\r\n"
    if not returned.endswith(b"\r\n"):
        returned += b"\r\n"
    return head + returned + f"\r\n--{boundary}--\r\n".encode()


def original_headers(message: bytes) -> bytes:
    """The header section, CRLF line ends, without the blank line that ends it."""
    match = _HEADER_END.search(message)
    head = message[: match.start()] if match else message.rstrip(b"\r\n")
    return head.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") + b"\r\n"


def _delivery_status(notice: NoticeMessage) -> str:
    fields = [f"Reporting-MTA: dns; {notice.hostname}", f"X-Relay-Queue-ID: {notice.queue_id}"]
    if notice.envid is not None:
        fields.append(f"Original-Envelope-Id: {_clean(notice.envid)}")
    fields.append(f"Arrival-Date: {email.utils.formatdate(notice.arrival, usegmt=True)}")
    blocks = ["\r\n".join(fields)]
    for report in notice.reports:
        block = [f"Final-Recipient: {_address_field(report.recipient)}"]
        if report.orcpt:
            kind, _, address = report.orcpt.partition(";")
            block.append(f"Original-Recipient: {_clean(kind)}; {_clean(address.strip())}")
        block += [f"Action: {report.action}", f"Status: {report.status}"]
        if report.remote_mta:
            block.append(f"Remote-MTA: dns; {_clean(report.remote_mta)}")
        if report.diagnostic:
            kind = "smtp" if report.smtp_reply else "X-Relay"
            block.append(f"Diagnostic-Code: {kind}; {_clean(report.diagnostic)}")
        if report.last_attempt is not None:
            date = email.utils.formatdate(report.last_attempt, usegmt=True)
            block.append(f"Last-Attempt-Date: {date}")
        if report.will_retry_until is not None:
            date = email.utils.formatdate(report.will_retry_until, usegmt=True)
            block.append(f"Will-Retry-Until: {date}")
        blocks.append("\r\n".join(block))
    return "\r\n\r\n".join(blocks) + "\r\n"


def _human_text(notice: NoticeMessage, main: Action, full: bool) -> list[str]:
    attached = "A copy of your message" if full else "The headers of your message"
    lines = [f"This is the mail relay at {notice.hostname}.", ""]
    failed = [r for r in notice.reports if r.action == "failed"]
    delayed = [r for r in notice.reports if r.action == "delayed"]
    sent = [r for r in notice.reports if r.action in ("delivered", "relayed")]
    if failed:
        lines += [
            "Your message could not be delivered to the recipients below. This is",
            "permanent: the relay will not try again.",
            "",
            *_recipient_lines(failed),
            "",
        ]
    if delayed:
        until = max((r.will_retry_until or notice.now) for r in delayed)
        lines += [
            "Your message has not been delivered yet to the recipients below. Nothing",
            "needs to be done: the relay keeps trying until",
            f"{email.utils.formatdate(until, usegmt=True)}, and tells you only if it",
            "gives up.",
            "",
            *_recipient_lines(delayed),
            "",
        ]
    if sent:
        lines += [
            "Your message was handed over to the destination servers of the recipients",
            "below, as you asked (they may not report anything further).",
            "",
            *_recipient_lines(sent),
            "",
        ]
    lines.append(f"{attached} is attached (queue id {notice.queue_id}).")
    return lines


def _recipient_lines(reports: Sequence[RecipientReport]) -> list[str]:
    lines = []
    for report in reports:
        where = f" (said {_clean(report.remote_mta)})" if report.remote_mta else ""
        lines.append(f"<{_clean(report.recipient)}>:{where}")
        lines.append(f"    {_clean(report.diagnostic)}")
    return lines


def _main_action(reports: Sequence[RecipientReport]) -> Action:
    actions = {r.action for r in reports}
    order: tuple[Action, ...] = ("failed", "delayed", "relayed", "delivered")
    for action in order:
        if action in actions:
            return action
    raise AssertionError(actions)


def _address_field(address: str) -> str:
    """RFC 3464 `rfc822; a@b`, or RFC 6533 `utf-8; ...` for an internationalized address."""
    address = _clean(address)
    return f"rfc822; {address}" if address.isascii() else f"utf-8; {address}"


def _header_value(headers: bytes, name: bytes) -> str | None:
    for line in headers.split(b"\r\n"):
        key, colon, value = line.partition(b":")
        if colon and key.strip().lower() == name:
            text = value.decode("utf-8", "replace").strip()
            return _clean(text) if re.fullmatch(r"<[^<>\s]+>", text) else None
    return None


def _clean(text: str) -> str:
    """One line, no control characters: values come from clients and remote servers."""
    return _CONTROL.sub(" ", text).strip()


def _ascii(text: str) -> bool:
    return text.isascii()


def _ascii_bytes(data: bytes) -> bool:
    return data.isascii()
