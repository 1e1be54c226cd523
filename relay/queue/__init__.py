"""The durable delivery queue: messages and per-domain jobs in Redis, claimed with leases."""

from relay.queue.model import DsnRequest, Envelope, Job, LastError, QueuedMessage, RecipientDsn
from relay.queue.store import (
    LEASE_LOST,
    NOTICE_QUEUED,
    Finished,
    Notice,
    QueueKeys,
    QueueStore,
    StoredMessage,
)

__all__ = [
    "LEASE_LOST",
    "NOTICE_QUEUED",
    "DsnRequest",
    "Envelope",
    "Finished",
    "Job",
    "LastError",
    "Notice",
    "QueueKeys",
    "QueueStore",
    "QueuedMessage",
    "RecipientDsn",
    "StoredMessage",
]
