"""The one error root of relay.events; Redis and HTTP client errors are translated here."""

from __future__ import annotations

from relay.errors import InvalidInput, NotFound, RelayError

__all__ = ["BadTarget", "EventsError", "UnknownWebhook"]


class EventsError(RelayError):
    """Base of the errors of events, suppression lists and webhooks."""


class BadTarget(EventsError, InvalidInput):
    """A webhook URL we will not post to (not http(s), unresolvable, or not public)."""


class UnknownWebhook(EventsError, NotFound):
    """No webhook of that id on that account."""
