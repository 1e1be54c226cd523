"""Spam complaints: plain forwarded mail or ARF feedback reports (RFC 5965).

Whoever sends a report writes all of it, the original message included, so the account is
found only from what a forger cannot know or move: the topmost `Received:` line of ours in
the original (we prepend it, so the client's own lines, forged ones included, are all below
it; the receiving servers add theirs above), whose queue id must be traced to an account
*and* whose Message-ID must be the one that account submitted under that queue id. Anything
else (no line of ours, an unknown queue id, another Message-ID, several originals) is left to
an operator: it never suspends on its own.
"""

from __future__ import annotations

import email
import email.parser
import json
import re
from dataclasses import dataclass, field
from email.message import Message
from email.policy import Compat32

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from relay.errors import InvalidInput
from relay.redis_client import store_errors, text
from relay.safe_text import clean_block, clean_line

__all__ = [
    "Attribution",
    "Complaint",
    "Trace",
    "TraceStore",
    "attribute",
    "normal_message_id",
    "parse_complaint",
]

TRACE_DAYS = 30
MAX_CONTAINERS = 100
"""multipart/* and message/* parts a report may hold: the email parser recurses into each,
and a report nested a few thousand deep would exhaust the stack."""
MAX_FIELD = 998
"""Longest value kept of a report field or header (RFC 5322's line limit)."""
MAX_FIELDS = 100

_CONTAINER = re.compile(
    rb"(?:^|[\r\n])content-type:[ \t]*(?:(?:\r\n|\r|\n)[ \t]+)*(?:multipart|message)/", re.I
)
_ORIGINAL_TYPES = ("message/rfc822", "message/global", "text/rfc822-headers")
_COMMENT = re.compile(r"\([^()]*\)")
_BY = re.compile(r"(?:^|\s)by\s+([^\s;]+)", re.I)


class _RawHeaders(Compat32):
    """Header values as they came, undecodable bytes kept (as surrogates): compat32 would
    turn a value with 8-bit bytes into a Header object that prints them as U+FFFD even
    when they are valid UTF-8."""

    def header_fetch_parse(self, name: str, value: str) -> str:
        return value


_RAW = _RawHeaders()


@dataclass(frozen=True)
class Complaint:
    feedback_type: str
    """ARF Feedback-Type (abuse, fraud, virus, …); "abuse" for a plain forwarded message."""
    reporter: str
    fields: dict[str, str] = field(default_factory=dict)
    """The machine-readable part of an ARF report."""
    original_headers: str = ""
    queue_id: str = ""
    """From the topmost `Received:` line of ours in the original; "" when there is none."""
    message_id: str = ""
    """The original's Message-ID, without spaces; "" when it has none."""
    problem: str = ""
    """Why the report itself cannot name an account ("" when its queue id can be looked up)."""

    def as_evidence(self) -> dict[str, object]:
        return {
            "feedback_type": self.feedback_type,
            "reporter": self.reporter,
            "fields": self.fields,
            "queue_id": self.queue_id,
            "message_id": self.message_id,
            "original_headers": self.original_headers[:4000],
        }


@dataclass(frozen=True)
class Trace:
    """What the relay remembered of a message it accepted."""

    account: str
    message_id: str
    """As `normal_message_id` gives it; "" for traces stored before Message-IDs were kept."""


@dataclass(frozen=True)
class Attribution:
    """The account a complaint is against, or why none can be named without an operator."""

    account: str = ""
    problem: str = ""


def attribute(complaint: Complaint, trace: Trace | None) -> Attribution:
    """Pure: the complaint is against the trace's account only when the report's original
    carries our queue id and the very Message-ID that was submitted under it."""
    if complaint.problem:
        return Attribution(problem=complaint.problem)
    qid = complaint.queue_id
    if trace is None:
        return Attribution(problem=f"queue id {qid} is unknown (not ours, or traced too long ago)")
    if not trace.message_id:
        return Attribution(problem=f"queue id {qid} was traced without its Message-ID")
    if not complaint.message_id:
        return Attribution(problem="the original message has no Message-ID")
    if complaint.message_id != trace.message_id:
        return Attribution(
            problem=f"Message-ID {complaint.message_id} is not the one submitted as {qid}"
            f" ({trace.message_id})"
        )
    return Attribution(account=trace.account)


def normal_message_id(value: str) -> str:
    """One form for comparing: unfolded, no spaces, no control characters, bounded."""
    return "".join(clean_line(value).split())[:MAX_FIELD]


def parse_complaint(report: bytes, *, hostname: str) -> Complaint:
    """The report as a Complaint; InvalidInput (one line) when it is not a mail message."""
    message = _parse(report)
    fields: dict[str, str] = {}
    originals: list[list[tuple[str, str]]] = []
    reports = _collect(message, fields, originals)
    if message.get_content_type() == "multipart/report":
        if not reports and not originals:
            raise InvalidInput("a multipart/report without a feedback report or original")
    elif not originals:
        # A complaint forwarded as is (or the spam itself): its own headers are the original.
        originals = [_items(message)]
    feedback_type = fields.get("feedback-type", "abuse") or "abuse"
    reporter = _value(message.get("From", ""))
    if len(originals) != 1:
        problem = (
            "no original message in the report"
            if not originals
            else f"{len(originals)} original messages in the report"
        )
        return Complaint(
            feedback_type=feedback_type,
            reporter=reporter,
            fields=fields,
            original_headers="".join(_header_text(o) for o in originals),
            problem=problem,
        )
    (headers,) = originals
    ours, queue_id = _topmost_ours(headers, hostname)
    problem = ""
    if not ours:
        problem = f"no Received line of {hostname} in the original message"
    elif not queue_id:
        problem = f"the topmost Received line of {hostname} carries no queue id"
    message_ids = [v for k, v in headers if k.lower() == "message-id"]
    return Complaint(
        feedback_type=feedback_type,
        reporter=reporter,
        fields=fields,
        original_headers=_header_text(headers),
        queue_id=queue_id,
        message_id=normal_message_id(message_ids[0]) if message_ids else "",
        problem=problem,
    )


def _parse(report: bytes) -> Message:
    if not report.strip():
        raise InvalidInput("the complaint is empty")
    if b"\x00" in report:
        raise InvalidInput("the complaint is not a mail message: it holds binary data")
    if len(_CONTAINER.findall(report)) > MAX_CONTAINERS:
        raise InvalidInput(
            f"the complaint has more than {MAX_CONTAINERS} multipart or message parts"
            " (nested too deep to read)"
        )
    try:
        message = email.message_from_bytes(report, policy=_RAW)
    except RecursionError:  # the bound above should make this unreachable
        raise InvalidInput("the complaint is nested too deep to read") from None
    if not message.keys():
        raise InvalidInput("the complaint is not a mail message: it does not start with headers")
    return message


def _collect(part: Message, fields: dict[str, str], originals: list[list[tuple[str, str]]]) -> bool:
    """Gather the feedback report's fields and the originals, looking into multiparts but
    never into an original (a message/rfc822 attached to the spam is not the spam). True
    when a feedback report part was found."""
    kind = part.get_content_type()
    if kind == "message/feedback-report":
        if not fields:
            fields.update(_report_fields(part))
        return True
    if kind in _ORIGINAL_TYPES:
        originals.append(_original(part))
        return False
    found = False
    if part.get_content_maintype() == "multipart" and isinstance(part.get_payload(), list):
        for sub in part.get_payload():
            if isinstance(sub, Message):
                found = _collect(sub, fields, originals) or found
    return found


def _items(message: Message) -> list[tuple[str, str]]:
    return [(name, _decode(value)) for name, value in message.items()]


def _decode(value: object) -> str:
    """Undecodable bytes (kept as surrogates by the parser) read as UTF-8, else U+FFFD."""
    return str(value).encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _value(value: object) -> str:
    return clean_line(_decode(value))[:MAX_FIELD]


def _payload_text(part: Message) -> str:
    raw = part.get_payload(decode=True)
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else _decode(raw)


def _original(part: Message) -> list[tuple[str, str]]:
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        return _items(payload[0])  # message/rfc822: parsed as a message
    head = re.split(r"\r?\n\r?\n", _payload_text(part), maxsplit=1)[0]
    parsed = email.parser.HeaderParser(policy=_RAW).parsestr(head)
    return _items(parsed)


def _report_fields(part: Message) -> dict[str, str]:
    payload = part.get_payload()
    if isinstance(payload, list):  # the parser sees the report as header blocks
        pairs = [
            (k, v) for block in payload if isinstance(block, Message) for k, v in block.items()
        ]
    else:
        pairs = [
            (name, value)
            for name, sep, value in (
                line.partition(":") for line in _payload_text(part).splitlines()
            )
            if sep
        ]
    fields: dict[str, str] = {}
    for name, value in pairs:
        key = clean_line(_decode(name)).lower()
        if key and len(fields) < MAX_FIELDS:
            fields.setdefault(key, _value(value))
    return fields


def _header_text(headers: list[tuple[str, str]]) -> str:
    return clean_block("".join(f"{name}: {value}\n" for name, value in headers))


def _topmost_ours(headers: list[tuple[str, str]], hostname: str) -> tuple[bool, str]:
    """(a Received line of ours was found, the queue id on the topmost one, or "").

    Only the topmost: every line below it was in the message the client handed us."""
    host = hostname.lower()
    our_id = re.compile(
        rf"\s*by\s+{re.escape(host)}\s+with\s+ESMTPSA\s+id\s+([0-9a-f]{{1,64}})\s*;", re.I
    )
    for name, value in headers:
        if name.lower() != "received":
            continue
        line = _without_comments(" ".join(value.split()))
        by = _BY.search(line)
        if by is None or by.group(1).lower().rstrip(".") != host:
            continue
        found = our_id.match(line, by.start())
        return True, found.group(1).lower() if found else ""
    return False, ""


def _without_comments(line: str) -> str:
    for _ in range(20):  # comments nest; a bound keeps a hostile line cheap
        stripped = _COMMENT.sub(" ", line)
        if stripped == line:
            break
        line = stripped
    return line


class TraceStore:
    """queue id → account and Message-ID, kept `TRACE_DAYS` days after submission."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis

    async def remember(self, queue_id: str, account: str, message_id: str) -> None:
        with store_errors():
            async with self._redis.pipeline(transaction=False) as pipe:
                self.stage_remember(pipe, queue_id, account, message_id)
                await pipe.execute()

    @staticmethod
    def stage_remember(pipe: Pipeline, queue_id: str, account: str, message_id: str) -> None:
        """`remember`, added to a pipeline (sent with the enqueue: no round trip of its own)."""
        value = json.dumps({"account": account, "message_id": normal_message_id(message_id)})
        pipe.set(f"trace:{queue_id}", value, ex=TRACE_DAYS * 86400)

    async def find(self, queue_id: str) -> Trace | None:
        with store_errors():
            found = await self._redis.get(f"trace:{queue_id}")
        if not found:
            return None
        stored = text(found)
        if not stored.startswith("{"):  # before Message-IDs were kept: the login alone
            return Trace(account=stored, message_id="")
        data = json.loads(stored)
        return Trace(account=str(data["account"]), message_id=str(data["message_id"]))
