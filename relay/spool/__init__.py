"""Message bodies on the node's disk: written once at acceptance, read once per attempt.

Redis keeps only what must be shared and exact (envelope, jobs, leases); a body never
travels through it.
"""

from relay.spool.budget import InflightBudget
from relay.spool.errors import SpoolError, SpoolFull, SpoolMissing
from relay.spool.store import Incoming, Spool, Spooled

__all__ = [
    "Incoming",
    "InflightBudget",
    "Spool",
    "SpoolError",
    "SpoolFull",
    "SpoolMissing",
    "Spooled",
]
