"""Delivery to remote MX hosts: routing, the SMTP client, outcome classification."""

from relay.delivery.egress import EgressPool
from relay.delivery.errors import PermanentRouteError, RouteError, TransientRouteError
from relay.delivery.mx import Hop, make_resolver, resolve_hops
from relay.delivery.outcome import (
    Disposition,
    RecipientOutcome,
    classify_exception,
    classify_reply,
    is_block_like,
)
from relay.delivery.smtp_client import send_to_domain

__all__ = [
    "Disposition",
    "EgressPool",
    "Hop",
    "PermanentRouteError",
    "RecipientOutcome",
    "RouteError",
    "TransientRouteError",
    "classify_exception",
    "classify_reply",
    "is_block_like",
    "make_resolver",
    "resolve_hops",
    "send_to_domain",
]
