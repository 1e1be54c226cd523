"""Pure edits a submission server makes to a message: trace header, missing Message-ID/Date;
and what it reads back from the result (the Message-ID traced with the queue id)."""

from __future__ import annotations

import email.utils
import re

__all__ = ["message_id_of", "missing_headers", "received_header"]

_HEADER_END = re.compile(rb"\r?\n\r?\n")


def received_header(
    *, helo: str, peer_ip: str, hostname: str, protocol: str, queue_id: str, now: float
) -> bytes:
    """RFC 5321 trace line; `protocol` is ESMTPSA for authenticated TLS (RFC 3848)."""
    helo = re.sub(r"[^\x21-\x7e]", "?", helo)[:255]
    date = email.utils.formatdate(now, usegmt=True)
    return (
        f"Received: from {helo} ([{peer_ip}])\r\n\tby {hostname} with {protocol}"
        f" id {queue_id};\r\n\t{date}\r\n"
    ).encode("ascii")


def missing_headers(head: bytes, *, hostname: str, queue_id: str, now: float) -> bytes:
    """Message-ID and Date header lines when the client's header section has none."""
    match = _HEADER_END.search(head)
    head = head[: match.start()] if match else head
    names = {
        line.split(b":", 1)[0].strip().lower()
        for line in head.splitlines()
        if line[:1] not in (b" ", b"\t") and b":" in line
    }
    added = b""
    if b"message-id" not in names:
        added += f"Message-ID: <{queue_id}@{hostname}>\r\n".encode("ascii")
    if b"date" not in names:
        added += f"Date: {email.utils.formatdate(now, usegmt=True)}\r\n".encode("ascii")
    return added


def message_id_of(body: bytes) -> str:
    """The value of the first Message-ID header (unfolded), "" when there is none.

    Read from the message as stamped, so it is the one the recipients see: a complaint about
    the message must quote it."""
    match = _HEADER_END.search(body)
    head = body[: match.start()] if match else body
    value: list[bytes] | None = None
    for line in head.splitlines():
        if value is not None:
            if line[:1] in (b" ", b"\t"):
                value.append(line)
                continue
            break
        name, colon, rest = line.partition(b":")
        if colon and name.strip().lower() == b"message-id":
            value = [rest]
    if value is None:
        return ""
    return b" ".join(part.strip() for part in value).decode("utf-8", "replace").strip()
