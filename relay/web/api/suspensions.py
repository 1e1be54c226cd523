"""Suspensions: list, show with evidence, lift, deny (as `relay suspension ...`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from relay.web import actions
from relay.web.api.models import Lift, Reason, Suspend
from relay.web.deps import Admin, Anyone, Operator, Services
from relay.web.errors import NotFoundError

router = APIRouter(prefix="/api/v1", tags=["suspensions"])


@router.get("/suspensions")
async def list_suspensions(
    services: Services, who: Operator, open: bool = False
) -> list[dict[str, Any]]:
    return [s.as_dict() for s in await services.suspensions.store.listing(open_only=open)]


@router.post("/accounts/{login}/suspensions", status_code=201)
async def suspend(services: Services, who: Admin, login: str, body: Suspend) -> dict[str, Any]:
    """As `relay suspension add`: suspend by hand (kind admin does not escalate)."""
    return (await actions.suspend(services, who, login, body.kind, body.reason)).as_dict()


@router.get("/suspensions/{sid}")
async def show_suspension(services: Services, who: Anyone, sid: str) -> dict[str, Any]:
    """With its evidence. A customer sees their own suspensions only."""
    s = await services.suspensions.store.get(sid)
    if who.kind == "customer" and s.account != who.name:
        raise NotFoundError(f"no suspension {sid!r}")
    return s.as_dict()


@router.post("/suspensions/{sid}/lift")
async def lift(services: Services, who: Admin, sid: str, body: Lift) -> dict[str, Any]:
    return (await actions.lift(services, who, sid, body.reason, body.force)).as_dict()


@router.post("/suspensions/{sid}/deny")
async def deny(services: Services, who: Admin, sid: str, body: Reason) -> dict[str, Any]:
    return (await actions.deny(services, who, sid, body.reason)).as_dict()
