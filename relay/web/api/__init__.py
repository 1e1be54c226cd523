"""The JSON API (`/api/v1/...`). Every router of it is listed in `ROUTERS`, which the app
factory includes: a new router is one more line here."""

from __future__ import annotations

from fastapi import APIRouter

from relay.web.api import accounts, audit, ips, queue, reports, session, suspensions

__all__ = ["ROUTERS"]

ROUTERS: tuple[APIRouter, ...] = (
    session.router,
    accounts.router,
    suspensions.router,
    audit.router,
    queue.router,
    ips.router,
    reports.router,
)
