"""One node of the relay: the parts of a process under supervision, the processes of a node
under a supervisor, and the counters they share.

`relay.node.supervisor` (the parent of `relay run --processes N`) is imported by itself:
it imports `relay.app`, which imports what imports this package.
"""

from relay.node.errors import GaveUp, NodeError, PartDied
from relay.node.limits import NodeConnectionLimits
from relay.node.share import NodeShare, attach, current
from relay.node.shared import SharedCounts

__all__ = [
    "GaveUp",
    "NodeConnectionLimits",
    "NodeError",
    "NodeShare",
    "PartDied",
    "SharedCounts",
    "attach",
    "current",
]
