"""Submission connection limits over every process of the node (see `shared`)."""

from __future__ import annotations

from relay import replies
from relay.node.shared import KEY_LIMIT, SharedCounts
from relay.submission.guard import client_key

__all__ = ["NodeConnectionLimits"]


class NodeConnectionLimits:
    """`ConnectionLimits` (same `admit`/`release`, same keying: `client_key`) for a
    node of several processes: open sessions of the node, in all and per client address.

    Synchronous like the per-process one: admission happens in `connection_made`, before
    the greeting, and costs a lock and a few reads of shared memory, no round trip.
    """

    def __init__(self, counts: SharedCounts, total: int, per_ip: int) -> None:
        self.total = total
        self.per_ip = per_ip
        self._counts = counts

    @property
    def open(self) -> int:
        """Open sessions of the whole node."""
        return self._counts.total()

    def admit(self, ip: str) -> str | None:
        """Count one more session from `ip`, or return the 421 that refuses it."""
        key = client_key(ip)
        why = self._counts.acquire(key, self.per_ip, self.total)
        if why is None:
            return None
        if why == KEY_LIMIT:
            return replies.TOO_MANY_FROM_IP.format(ip=key)
        return str(replies.TOO_MANY_CONNECTIONS)

    def release(self, ip: str) -> None:
        self._counts.release(client_key(ip))
