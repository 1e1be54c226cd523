"""`GET /v1/events?since=` (cursor-paginated) and the suppression list endpoints."""

from typing import Annotated

from fastapi import APIRouter, Body, Query

from relay.address import is_mailbox
from relay.errors import StoreUnavailable
from relay.events.model import KINDS
from relay.web.api.deps_apps import Caller, Services, problem, unavailable

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["events"])


@router.get("/events")
async def list_events(
    caller: Caller,
    services: Services,
    since: Annotated[str, Query(pattern=r"^(\d+-\d+)?$")] = "",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    kind: Annotated[str, Query()] = "",
) -> dict[str, object]:
    """The account's events after `since` (an event id; none: from the oldest kept), oldest
    first. `next` is the cursor for the following page (the same when nothing is new)."""
    if kind and kind not in KINDS:
        raise problem(422, "bad_field", f"one of {', '.join(KINDS)}", field="kind")
    try:
        events = await services.events.since(caller.login, since, limit)
    except StoreUnavailable as exc:
        unavailable(exc)
    cursor = events[-1].id if events else since
    shown = [e.as_dict() for e in events if not kind or e.kind == kind]
    return {"events": shown, "next": cursor, "more": len(events) == limit}


@router.get("/suppressions")
async def list_suppressions(caller: Caller, services: Services) -> dict[str, object]:
    try:
        entries = await services.suppressions.list(caller.login)
    except StoreUnavailable as exc:
        unavailable(exc)
    return {"suppressions": [e.as_dict() for e in entries]}


@router.put("/suppressions/{address}")
async def add_suppression(
    address: str,
    caller: Caller,
    services: Services,
    reason: Annotated[str, Body(embed=True, max_length=300)] = "added through the API",
) -> dict[str, object]:
    if not is_mailbox(address):
        raise problem(422, "bad_field", "not an address", field="address")
    try:
        entry, new = await services.suppressions.add(
            caller.login, address, reason=reason, source="api"
        )
    except StoreUnavailable as exc:
        unavailable(exc)
    return {"suppression": entry.as_dict(), "new": new}


@router.delete("/suppressions/{address}")
async def remove_suppression(address: str, caller: Caller, services: Services) -> dict[str, object]:
    try:
        removed = await services.suppressions.remove(caller.login, address)
    except StoreUnavailable as exc:
        unavailable(exc)
    if not removed:
        raise problem(404, "not_found", f"{address} is not on the suppression list")
    return {"removed": address}
