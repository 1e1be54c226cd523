"""What an event is, and which events one delivery attempt makes: pure, over plain values."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "KINDS",
    "Event",
    "EventDraft",
    "recipient_states",
    "suppresses",
]

ACCEPTED: Final = "accepted"
DELIVERED: Final = "delivered"
DEFERRED: Final = "deferred"
BOUNCED: Final = "bounced"
DELAY_NOTICE: Final = "delay_notice"
EXPIRED: Final = "expired"
COMPLAINT: Final = "complaint"
SUPPRESSED: Final = "suppressed"
QUARANTINED: Final = "quarantined"

KINDS: Final = (
    ACCEPTED,
    DELIVERED,
    DEFERRED,
    BOUNCED,
    DELAY_NOTICE,
    EXPIRED,
    COMPLAINT,
    SUPPRESSED,
    QUARANTINED,
)
"""Every state change of a recipient an application can see (and subscribe a webhook to)."""

FINAL: Final = frozenset({DELIVERED, BOUNCED, EXPIRED, QUARANTINED})
"""Kinds after which nothing more happens to the recipient's copy of the message."""


@dataclass(frozen=True)
class EventDraft:
    """An event before the stream gives it its id."""

    kind: str
    message_id: str
    recipient: str
    at: float
    data: dict[str, Any] = field(default_factory=dict)
    """Kind-specific details: remote reply, egress IP, next attempt, reason."""

    def to_json(self) -> str:
        return json.dumps(
            {
                "kind": self.kind,
                "message_id": self.message_id,
                "recipient": self.recipient,
                "at": self.at,
                **({"data": self.data} if self.data else {}),
            },
            separators=(",", ":"),
        )


@dataclass(frozen=True)
class Event:
    """An event as stored: its stream id orders it (per account) and is the cursor."""

    id: str
    account: str
    kind: str
    message_id: str
    recipient: str
    at: float
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, event_id: str, account: str, stored: str) -> Event:
        raw = json.loads(stored)
        return cls(
            id=event_id,
            account=account,
            kind=str(raw["kind"]),
            message_id=str(raw["message_id"]),
            recipient=str(raw["recipient"]),
            at=float(raw["at"]),
            data=dict(raw.get("data") or {}),
        )

    def as_dict(self) -> dict[str, Any]:
        """The event as applications get it (API, webhooks, `relay events --json`)."""
        return {
            "id": self.id,
            "account": self.account,
            "kind": self.kind,
            "message_id": self.message_id,
            "recipient": self.recipient,
            "at": self.at,
            "data": self.data,
        }


def suppresses(status: str) -> bool:
    """A permanent failure that says the mailbox does not exist or cannot be addressed
    (RFC 3463 X.1.x: bad mailbox, bad system, bad syntax, moved): sending there again can
    only bounce again, and repeated bounces hurt the egress IPs' reputation. A 5.7.x
    (policy) or 5.2.x (mailbox full) refusal may pass later: not suppressed."""
    return status.startswith("5.1.")


def recipient_states(events: list[Event]) -> dict[str, dict[str, Any]]:
    """Recipient → its latest state (kind, at, data) from a message's events in order.

    A complaint or a suppression after delivery does not hide the delivery: the state is the
    last delivery-side kind, and later kinds are listed beside it."""
    states: dict[str, dict[str, Any]] = {}
    for event in events:
        if not event.recipient:
            continue
        state = states.setdefault(event.recipient, {"status": ACCEPTED, "at": event.at})
        if event.kind in (COMPLAINT, SUPPRESSED):
            state.setdefault("also", []).append(event.kind)
            continue
        state.update({"status": event.kind, "at": event.at, "data": event.data})
    return states
