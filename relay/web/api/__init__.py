"""The JSON API (`/api/v1/...`). Every router of it is listed in `ROUTERS`, which the app
factory includes: a new router is one more line here."""

from __future__ import annotations

from fastapi import APIRouter

from relay.web.api import (
    accounts,
    audit,
    content,
    events,
    ips,
    messages,
    queue,
    reports,
    session,
    suspensions,
)

__all__ = ["LARGE_BODIES", "ROUTERS", "SEND_ROUTE"]

SEND_ROUTE = messages.SEND_ROUTE
"""`POST /v1/messages`, which the app matches before anything else (the hot route)."""

ROUTERS: tuple[APIRouter, ...] = (
    # The applications' API first: a request is matched against the routers in this order,
    # and the applications' calls are the frequent ones (matching /v1/... after the others
    # cost ~100 us a request).
    messages.router,  # the applications' send API (API keys; /v1)
    events.router,
    session.router,
    accounts.router,
    suspensions.router,
    audit.router,
    queue.router,
    ips.router,
    reports.router,
    content.router,
)

LARGE_BODIES: tuple[str, ...] = ("/v1/messages",)
"""Path prefixes whose request bodies may be as large as a message (twice
`submission.max_message_size`, for base64 in JSON); every other body is bounded to 1 MB."""
