"""The durable delivery queue: messages and per-domain jobs in Redis, claimed with leases."""

from relay.queue.model import Envelope, Job, QueuedMessage
from relay.queue.store import QueueStore, StoredMessage

__all__ = ["Envelope", "Job", "QueueStore", "QueuedMessage", "StoredMessage"]
