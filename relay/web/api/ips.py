"""The egress IP pool: state, disable, enable (as `relay ip ...`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from relay.web import actions
from relay.web.api.models import IpDisable
from relay.web.deps import Admin, Operator, Services

router = APIRouter(prefix="/api/v1", tags=["ips"])


@router.get("/ips")
async def list_ips(services: Services, who: Operator) -> list[dict[str, Any]]:
    return [r.as_dict() for r in await services.egress.describe(services.settings.delivery.egress)]


@router.post("/ips/{ip}/disable")
async def disable(services: Services, who: Admin, ip: str, body: IpDisable) -> dict[str, str]:
    return {"done": await actions.disable_ip(services, who, ip, body.reason)}


@router.post("/ips/{ip}/enable")
async def enable(services: Services, who: Admin, ip: str) -> dict[str, str]:
    return {"done": await actions.enable_ip(services, who, ip)}
