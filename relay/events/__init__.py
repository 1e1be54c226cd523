"""What applications see of their mail: per-recipient events, suppression lists, webhooks.

Every state change of a recipient (accepted, delivered, deferred, bounced, delay notice sent,
expired, complaint, suppressed, quarantined) is appended to its account's event stream in
Redis; webhooks push the same events to the application's endpoint, signed.
"""

import redis.asyncio as aioredis

from relay.clock import Clock
from relay.config import Settings
from relay.events.dispatcher import WebhookDispatcher
from relay.events.errors import BadTarget, EventsError, UnknownWebhook
from relay.events.model import KINDS, Event, EventDraft
from relay.events.recorder import EventRecorder
from relay.events.stream import EventStream
from relay.events.suppression import Suppressed, SuppressionList
from relay.events.webhooks import Webhook, WebhookStore

__all__ = [
    "KINDS",
    "BadTarget",
    "Event",
    "EventDraft",
    "EventRecorder",
    "EventStream",
    "EventsError",
    "Suppressed",
    "SuppressionList",
    "UnknownWebhook",
    "Webhook",
    "WebhookDispatcher",
    "WebhookStore",
    "event_recorder",
    "webhook_dispatcher",
]


def event_recorder(redis: aioredis.Redis, settings: Settings, clock: Clock) -> EventRecorder:
    """The recorder every part of one process shares, from the settings."""
    stream = EventStream(redis, clock, retention=settings.events.retention.seconds)
    return EventRecorder(stream, SuppressionList(redis, clock), clock)


def webhook_dispatcher(
    redis: aioredis.Redis, settings: Settings, clock: Clock
) -> WebhookDispatcher:
    """The process's webhook dispatcher (a part of `relay run`)."""
    return WebhookDispatcher(
        store=WebhookStore(redis, clock),
        stream=EventStream(redis, clock, retention=settings.events.retention.seconds),
        settings=settings.webhooks,
        clock=clock,
        node=settings.node.id,
    )
