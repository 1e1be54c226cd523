"""Quarantined mail and allow/deny lists (as `relay quarantine|list`): operators see all, a
customer their own account's; a customer delivers or deletes their own suspected spam and
keeps their own lists, an admin acts on any, a viewer only looks."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from relay.content.lists import GLOBAL
from relay.content.quarantine import Held
from relay.web import content_actions
from relay.web.api.models import ListEntryIn, ListEntryOut
from relay.web.deps import Acting, Admin, Anyone, OnAccount, Operator, Services, existing_account

router = APIRouter(prefix="/api/v1", tags=["content"])

Limit = Annotated[int, Query(ge=1, le=10000)]


@router.get("/quarantine")
async def list_quarantine(
    services: Services,
    who: Operator,
    account: str = "",
    kind: Literal["malware", "spam"] | None = None,
    limit: Limit = 1000,
) -> list[dict[str, Any]]:
    """Newest first; `account` and `kind` filter."""
    held = await services.quarantine.store.listing(
        account=account, kind=Held(kind) if kind else None, limit=limit
    )
    return [q.as_dict() for q in held]


@router.get("/accounts/{login}/quarantine")
async def account_quarantine(
    services: Services, who: Anyone, login: str, limit: Limit = 1000
) -> list[dict[str, Any]]:
    await existing_account(services, who, login)
    return [
        q.as_dict() for q in await services.quarantine.store.listing(account=login, limit=limit)
    ]


@router.get("/quarantine/{qid}")
async def show_held(services: Services, who: Anyone, qid: str) -> dict[str, Any]:
    return (await content_actions.held_for(services, who, qid)).as_dict()


@router.post("/quarantine/{qid}/release")
async def release_held(services: Services, who: Acting, qid: str) -> dict[str, str]:
    """Delivered through the queue, counted on the quota (refused over it). Malware: an
    admin only."""
    return {"done": await content_actions.release_held(services, who, qid)}


@router.post("/quarantine/{qid}/delete")
async def delete_held(services: Services, who: Acting, qid: str) -> dict[str, str]:
    """Removed with its body. Malware: an admin only (it is kept a year as evidence)."""
    return {"done": await content_actions.delete_held(services, who, qid)}


@router.get("/lists")
async def list_entries(
    services: Services, who: Operator, scope: Literal["all", "global"] = "all"
) -> list[dict[str, Any]]:
    """Every list (`all`) or the global one only."""
    return [e.as_dict() for e in await services.lists.show(None if scope == "all" else GLOBAL)]


@router.post("/lists", status_code=201)
async def add_global(services: Services, who: Admin, body: ListEntryIn) -> dict[str, Any]:
    """Into the global list (every account; an account's own entry overrides it)."""
    entry = await content_actions.add_entry(
        services, who, GLOBAL, body.kind, body.action, body.value, body.reason
    )
    return entry.as_dict()


@router.post("/lists/remove")
async def remove_global(services: Services, who: Admin, body: ListEntryOut) -> dict[str, str]:
    return {
        "done": await content_actions.remove_entry(services, who, GLOBAL, body.kind, body.value)
    }


@router.get("/accounts/{login}/lists")
async def account_entries(services: Services, who: Anyone, login: str) -> list[dict[str, Any]]:
    await existing_account(services, who, login)
    return [e.as_dict() for e in await services.lists.show(login)]


@router.post("/accounts/{login}/lists", status_code=201)
async def add_entry(
    services: Services, who: OnAccount, login: str, body: ListEntryIn
) -> dict[str, Any]:
    entry = await content_actions.add_entry(
        services, who, login, body.kind, body.action, body.value, body.reason
    )
    return entry.as_dict()


@router.post("/accounts/{login}/lists/remove")
async def remove_entry(
    services: Services, who: OnAccount, login: str, body: ListEntryOut
) -> dict[str, str]:
    return {"done": await content_actions.remove_entry(services, who, login, body.kind, body.value)}
