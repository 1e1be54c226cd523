"""Spam complaints: plain forwarded mail or ARF feedback reports (RFC 5965).

The account is the one given, or the one that submitted the original message: our own
`Received:` line in it carries the queue id, and the trace store maps queue ids to accounts
for `TRACE_DAYS` days.
"""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass, field
from email.message import Message

import redis.asyncio as aioredis

from relay.errors import InvalidInput
from relay.redis_client import store_errors, text

__all__ = ["Complaint", "TraceStore", "parse_complaint"]

TRACE_DAYS = 30


@dataclass(frozen=True)
class Complaint:
    feedback_type: str
    """ARF Feedback-Type (abuse, fraud, virus, …); "abuse" for a plain forwarded message."""
    reporter: str
    fields: dict[str, str] = field(default_factory=dict)
    """The machine-readable part of an ARF report."""
    original_headers: str = ""
    queue_ids: tuple[str, ...] = ()
    """Our queue ids found in the original message's Received lines."""

    def as_evidence(self) -> dict[str, object]:
        return {
            "feedback_type": self.feedback_type,
            "reporter": self.reporter,
            "fields": self.fields,
            "queue_ids": list(self.queue_ids),
            "original_headers": self.original_headers[:4000],
        }


def _queue_ids(headers: str, hostname: str) -> tuple[str, ...]:
    pattern = re.compile(
        rf"by\s+{re.escape(hostname)}\s+with\s+E?SMTPS?A?\s+id\s+([0-9a-f]+)", re.IGNORECASE
    )
    return tuple(dict.fromkeys(pattern.findall(headers)))


def _headers_of(part: Message) -> str:
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        return "".join(f"{k}: {v}\n" for k, v in payload[0].items())  # message/rfc822
    raw = part.get_payload(decode=True)
    data = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(payload)
    return data.split("\n\n", 1)[0].split("\r\n\r\n", 1)[0]


def _report_fields(part: Message) -> dict[str, str]:
    payload = part.get_payload()
    if isinstance(payload, list):  # some parsers see the report as header blocks
        lines = [
            f"{k}: {v}" for block in payload if isinstance(block, Message) for k, v in block.items()
        ]
    else:
        raw = part.get_payload(decode=True)
        lines = (
            raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(payload)
        ).splitlines()
    fields: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if sep and name.strip():
            fields.setdefault(name.strip().lower(), value.strip())
    return fields


def parse_complaint(report: bytes, *, hostname: str) -> Complaint:
    if not report.strip():
        raise InvalidInput("the complaint is empty")
    message = email.message_from_bytes(report, policy=email.policy.compat32)
    reporter = str(message.get("From", ""))
    if message.get_content_type() == "multipart/report":
        fields: dict[str, str] = {}
        original = ""
        for part in message.walk():
            kind = part.get_content_type()
            if kind == "message/feedback-report":
                fields = _report_fields(part)
            elif kind in ("message/rfc822", "text/rfc822-headers") and not original:
                original = _headers_of(part)
        if not fields and not original:
            raise InvalidInput("a multipart/report without a feedback report or original")
        return Complaint(
            feedback_type=fields.get("feedback-type", "abuse"),
            reporter=reporter,
            fields=fields,
            original_headers=original,
            queue_ids=_queue_ids(original, hostname),
        )
    # A complaint forwarded as is (or the spam itself): its own headers are the original.
    headers = "".join(f"{k}: {v}\n" for k, v in message.items())
    for part in message.walk():
        if part.get_content_type() == "message/rfc822":
            headers = _headers_of(part)
            break
    return Complaint(
        feedback_type="abuse",
        reporter=reporter,
        original_headers=headers,
        queue_ids=_queue_ids(headers, hostname),
    )


class TraceStore:
    """queue id → account, kept `TRACE_DAYS` days after submission."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis

    async def remember(self, queue_id: str, account: str) -> None:
        with store_errors():
            await self._redis.set(f"trace:{queue_id}", account, ex=TRACE_DAYS * 86400)

    async def account_of(self, queue_id: str) -> str | None:
        with store_errors():
            found = await self._redis.get(f"trace:{queue_id}")
        return text(found) if found else None
