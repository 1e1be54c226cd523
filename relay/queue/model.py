"""What the queue holds: a message (envelope + body) and one delivery job per domain."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

from relay.address import domain_of

NOTIFY_KEYWORDS = frozenset({"SUCCESS", "FAILURE", "DELAY"})
DEFAULT_NOTIFY = frozenset({"FAILURE", "DELAY"})
"""What a recipient without NOTIFY gets (RFC 3461 leaves the default to the MTA)."""


@dataclass(frozen=True)
class RecipientDsn:
    """NOTIFY and ORCPT of one recipient (RFC 3461); None: not given."""

    notify: frozenset[str] | None = None
    """Subset of SUCCESS/FAILURE/DELAY; the empty set is NOTIFY=NEVER."""
    orcpt: str | None = None
    """`addr-type;address` as given, xtext decoded, e.g. `rfc822;bob@example.com`."""

    def wants(self, kind: Literal["SUCCESS", "FAILURE", "DELAY"]) -> bool:
        return kind in (DEFAULT_NOTIFY if self.notify is None else self.notify)


@dataclass(frozen=True)
class DsnRequest:
    """The DSN parameters of a transaction: RET and ENVID on MAIL, NOTIFY/ORCPT per RCPT."""

    ret: Literal["FULL", "HDRS"] | None = None
    envid: str | None = None
    recipients: tuple[tuple[str, RecipientDsn], ...] = ()
    """(recipient, its parameters) for the recipients that gave any."""

    def of(self, recipient: str) -> RecipientDsn:
        for address, params in self.recipients:
            if address == recipient:
                return params
        return RecipientDsn()

    def to_json(self) -> str:
        """ "" when nothing was asked, so ordinary mail stores nothing."""
        if self == DsnRequest():
            return ""
        return json.dumps(
            {
                "ret": self.ret,
                "envid": self.envid,
                "rcpts": [
                    [a, sorted(p.notify) if p.notify is not None else None, p.orcpt]
                    for a, p in self.recipients
                ],
            }
        )

    @classmethod
    def from_json(cls, text: str) -> DsnRequest:
        if not text:
            return cls()
        data = json.loads(text)
        return cls(
            ret=data.get("ret"),
            envid=data.get("envid"),
            recipients=tuple(
                (a, RecipientDsn(frozenset(n) if n is not None else None, o))
                for a, n, o in data.get("rcpts", [])
            ),
        )


@dataclass(frozen=True)
class Envelope:
    mail_from: str
    """The reverse-path; "" is the null sender `<>`."""
    recipients: tuple[str, ...]
    account: str
    dsn: DsnRequest = DsnRequest()
    sender_verified: bool = False
    """The reverse-path was a verified identity of the account at submission: only then
    does it get notices (bounces to a forged sender would be backscatter)."""


@dataclass(frozen=True)
class QueuedMessage:
    id: str
    mail_from: str
    recipients: tuple[str, ...]
    account: str
    created_at: float
    size: int
    jobs_left: int
    dsn: DsnRequest = DsnRequest()
    held_at: float | None = None
    """When an operator (or a suspension) held it; None: not held."""
    held_for: float = 0.0
    """Seconds spent held before the current hold; ages exclude them."""
    delay_notified: bool = False
    notice: str = ""
    """For a notice we generated: its kind ("failure", "delay", "success"); else ""."""
    sender_verified: bool = False
    """See Envelope.sender_verified; False for mail queued before it was recorded."""

    def held_total(self, now: float) -> float:
        return self.held_for + (now - self.held_at if self.held_at is not None else 0.0)

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "mail_from": self.mail_from,
            "recipients": list(self.recipients),
            "account": self.account,
            "created_at": self.created_at,
            "size": self.size,
            "jobs_left": self.jobs_left,
            "held_at": self.held_at,
            "held_for": self.held_for,
            "delay_notified": self.delay_notified,
            "notice": self.notice,
            "sender_verified": self.sender_verified,
        }


@dataclass(frozen=True)
class LastError:
    """Why a job's last attempt did not deliver, as fields (stored so, never parsed back)."""

    code: int
    """SMTP reply code, or the synthetic 451 of a failure without a reply."""
    status: str
    """Enhanced status code (RFC 3463), e.g. "4.4.1"."""
    text: str
    egress_ip: str | None = None
    """Our address the attempt went out from; None when none was used."""
    mx: str | None = None
    """The host that answered (or could not be reached); None when none was tried."""

    def __str__(self) -> str:
        where = " ".join(
            part
            for part in (
                f"from {self.egress_ip}" if self.egress_ip else "",
                f"at {self.mx}" if self.mx else "",
            )
            if part
        )
        return f"{self.code} {self.status} {self.text}" + (f" ({where})" if where else "")

    def as_fields(self) -> dict[str, str]:
        """The job hash's fields (absent values are empty)."""
        return {
            "error_code": str(self.code),
            "error_status": self.status,
            "error_text": self.text,
            "error_ip": self.egress_ip or "",
            "error_mx": self.mx or "",
        }

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> LastError | None:
        code = fields.get("error_code")
        if not code:
            return None
        return cls(
            code=int(code),
            status=fields.get("error_status", ""),
            text=fields.get("error_text", ""),
            egress_ip=fields.get("error_ip") or None,
            mx=fields.get("error_mx") or None,
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "code": self.code,
            "status": self.status,
            "text": self.text,
            "egress_ip": self.egress_ip,
            "mx": self.mx,
        }


@dataclass(frozen=True)
class Job:
    """Delivery of one message to the recipients of one domain."""

    id: str
    message_id: str
    domain: str
    recipients: tuple[str, ...]
    attempts: int
    created_at: float
    due_at: float
    last_error: LastError | None = None
    held: bool = False
    token: str = field(default="", compare=False)
    """The lease this worker holds; a finish with a stale token is refused."""
    meta: QueuedMessage | None = field(default=None, compare=False, repr=False)
    """Its message, as it was when the job was claimed (None: not read with the job)."""
    prefix: bytes = field(default=b"", compare=False, repr=False)
    """The header lines added to its message at acceptance (with `meta`)."""

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "domain": self.domain,
            "recipients": list(self.recipients),
            "attempts": self.attempts,
            "created_at": self.created_at,
            "due_at": self.due_at,
            "last_error": self.last_error.as_dict() if self.last_error else None,
            "held": self.held,
        }


def split_by_domain(recipients: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """Recipients grouped by destination domain, in first-seen order, duplicates dropped."""
    groups: dict[str, list[str]] = {}
    seen: set[str] = set()
    for rcpt in recipients:
        if rcpt.lower() in seen:
            continue
        seen.add(rcpt.lower())
        groups.setdefault(domain_of(rcpt), []).append(rcpt)
    return {domain: tuple(rcpts) for domain, rcpts in groups.items()}
