"""What the processes of one node share, and which of it this process is.

The supervisor creates the share before it forks its children; each child `attach`es to it
with its own row. The share is process state (inherited memory, like the process's signal
handlers), so the parts that need it (the submission listeners' admission, the delivery
worker's destination slots) find it with `current()` instead of every constructor between
`serve` and them carrying it. A process that is not a supervisor's child (`--processes 1`,
tests) has none and counts on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from relay.config import Settings
from relay.node.drain import DrainFlag
from relay.node.shared import SharedCounts

__all__ = ["NodeShare", "attach", "current"]


@dataclass(frozen=True)
class NodeShare:
    processes: int
    connections: SharedCounts
    """Open submission sessions, per client address and in all."""
    destinations: SharedCounts
    """Delivery sessions in use, per destination (its set of MX hosts)."""
    drain: DrainFlag
    """Whether the node is draining: the supervisor writes it, every child reads it."""

    @classmethod
    def create(cls, settings: Settings, processes: int) -> NodeShare:
        return cls(
            processes=processes,
            connections=SharedCounts(processes, live=settings.submission.max_connections),
            destinations=SharedCounts(processes, live=processes * settings.delivery.workers),
            drain=DrainFlag(),
        )

    def reset(self, row: int) -> tuple[int, int]:
        """A child is gone: give back what it held; (sessions, delivery slots) it held."""
        return self.connections.reset(row), self.destinations.reset(row)


_current: NodeShare | None = None


def attach(share: NodeShare, row: int) -> None:
    """In a supervisor's child, before `serve`: count in `row` of `share` from now on."""
    global _current
    share.connections.bind(row)
    share.destinations.bind(row)
    _current = share


def current() -> NodeShare | None:
    """This process's node share, or None when it is alone (it counts on its own)."""
    return _current
