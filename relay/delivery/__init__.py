"""Delivery to remote MX hosts: routing, the egress pool, the SMTP client, the retry schedule."""

from relay.delivery.egress import EgressPool, EgressStatus
from relay.delivery.egress_state import EgressState, IpReport, egress_state
from relay.delivery.errors import PermanentRouteError, RouteError, TransientRouteError
from relay.delivery.mx import Hop, make_resolver, resolve_hops
from relay.delivery.outcome import (
    Disposition,
    RecipientOutcome,
    classify_exception,
    classify_reply,
    is_block_like,
)
from relay.delivery.schedule import RetrySchedule
from relay.delivery.smtp_client import AttemptReport, attempt_domain

__all__ = [
    "AttemptReport",
    "Disposition",
    "EgressPool",
    "EgressState",
    "EgressStatus",
    "Hop",
    "IpReport",
    "PermanentRouteError",
    "RecipientOutcome",
    "RetrySchedule",
    "RouteError",
    "TransientRouteError",
    "attempt_domain",
    "classify_exception",
    "classify_reply",
    "egress_state",
    "is_block_like",
    "make_resolver",
    "resolve_hops",
]
