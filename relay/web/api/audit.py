"""The audit log: filter by account, newest `limit`, as JSON or CSV."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response

from relay.web import actions
from relay.web.deps import Operator, Services

router = APIRouter(prefix="/api/v1", tags=["audit"])

Limit = Annotated[int, Query(ge=1, le=100000)]


@router.get("/audit")
async def audit(
    services: Services, who: Operator, account: str = "", limit: Limit = 100
) -> list[dict[str, Any]]:
    """Oldest first, as `relay audit`."""
    return [e.as_dict() for e in await services.audit.entries(account=account, limit=limit)]


@router.get("/audit.csv", response_class=Response)
async def audit_csv(
    services: Services, who: Operator, account: str = "", limit: Limit = 10000
) -> Response:
    entries = await services.audit.entries(account=account, limit=limit)
    return Response(actions.audit_csv(entries), media_type="text/csv; charset=utf-8")
