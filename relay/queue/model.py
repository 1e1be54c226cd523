"""What the queue holds: a message (envelope + body) and one delivery job per domain."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Envelope:
    mail_from: str
    """The reverse-path; "" is the null sender `<>`."""
    recipients: tuple[str, ...]
    account: str


@dataclass(frozen=True)
class QueuedMessage:
    id: str
    mail_from: str
    recipients: tuple[str, ...]
    account: str
    created_at: float
    size: int
    jobs_left: int

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "mail_from": self.mail_from,
            "recipients": list(self.recipients),
            "account": self.account,
            "created_at": self.created_at,
            "size": self.size,
            "jobs_left": self.jobs_left,
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
    last_error: str = ""
    token: str = field(default="", compare=False)
    """The lease this worker holds; a finish with a stale token is refused."""

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "domain": self.domain,
            "recipients": list(self.recipients),
            "attempts": self.attempts,
            "created_at": self.created_at,
            "due_at": self.due_at,
            "last_error": self.last_error,
        }


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower().rstrip(".")


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
