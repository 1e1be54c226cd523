"""The durable delivery queue: messages and per-domain jobs in Redis, claimed with leases."""

from relay.queue.model import DsnRequest, Envelope, Job, QueuedMessage, RecipientDsn
from relay.queue.store import LEASE_LOST, NOTICE_QUEUED, Notice, QueueStore, StoredMessage

__all__ = [
    "LEASE_LOST",
    "NOTICE_QUEUED",
    "DsnRequest",
    "Envelope",
    "Job",
    "Notice",
    "QueueStore",
    "QueuedMessage",
    "RecipientDsn",
    "StoredMessage",
]
