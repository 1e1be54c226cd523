"""Accounts, plans, usage, unblock requests: operators see all, a customer only their own."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from relay.errors import InvalidInput
from relay.web import actions
from relay.web.api.models import NewPlan, PasswordChange, Reason, UnblockAsk
from relay.web.auth import customer_login
from relay.web.deps import (
    Admin,
    Anyone,
    Customer,
    Operator,
    Services,
    existing_account,
    own_account,
)
from relay.web.errors import Unauthenticated
from relay.web.pages.login import client_ip
from relay.web.views import account_state, banner, usage_view

router = APIRouter(prefix="/api/v1", tags=["accounts"])


@router.get("/accounts")
async def list_accounts(services: Services, who: Operator) -> list[dict[str, Any]]:
    return [a.as_dict() for a in await services.accounts.list()]


@router.get("/accounts/{login}")
async def show_account(services: Services, who: Anyone, login: str) -> dict[str, Any]:
    own_account(who, login)
    account = await services.accounts.require(login)
    state = await account_state(services, login)
    return {
        **account.as_dict(),
        "state": state.usage.state,
        "banner": banner(state, services.settings.reputation.support),
        "open_suspensions": [s.id for s in state.open_suspensions],
    }


@router.get("/accounts/{login}/plans")
async def list_plans(services: Services, who: Anyone, login: str) -> list[dict[str, Any]]:
    await existing_account(services, who, login)
    now = services.clock.now()
    return [p.as_dict(now) for p in await services.quota.plans(login)]


@router.post("/accounts/{login}/plans", status_code=201)
async def add_plan(services: Services, who: Admin, login: str, body: NewPlan) -> dict[str, Any]:
    """As `relay plan add`; audited."""
    plan = await actions.add_plan(
        services, who, login, body.daily, body.per_minute, body.starts, body.expires
    )
    return {
        "id": plan.id,
        "daily": plan.daily,
        "per_minute": plan.per_minute,
        "starts": plan.starts,
        "expires": plan.expires,
    }


@router.delete("/accounts/{login}/plans/{plan_id}")
async def remove_plan(services: Services, who: Admin, login: str, plan_id: str) -> dict[str, str]:
    await actions.remove_plan(services, who, login, plan_id)
    return {"done": f"plan {plan_id} removed from {login}"}


@router.get("/accounts/{login}/usage")
async def usage(services: Services, who: Anyone, login: str) -> dict[str, Any]:
    """Last 24 h: used, quota, remaining, next free slot, per-hour series (as `relay usage`)."""
    await existing_account(services, who, login)
    now = services.clock.now()
    return {"login": login, **usage_view(await services.quota.usage(login, now), now)}


@router.get("/accounts/{login}/suspensions")
async def account_suspensions(services: Services, who: Anyone, login: str) -> list[dict[str, Any]]:
    await existing_account(services, who, login)
    return [s.as_dict() for s in await services.suspensions.store.of_account(login)]


@router.post("/accounts/{login}/password")
async def change_password(
    request: Request, services: Services, who: Customer, login: str, body: PasswordChange
) -> dict[str, Any]:
    """The customer's own password; a first-offence suspension is lifted by it."""
    own_account(who, login)
    ip = client_ip(request)
    checked = await customer_login(services.guard, services.accounts, login, body.current, ip)
    if checked.who is None:
        raise Unauthenticated(f"current password: {checked.error}")
    await services.accounts.set_password(login, body.new)
    await services.audit.append(actor=who.actor, action="password-change", account=login)
    lifted = await services.suspensions.password_changed(login)
    return {"changed": True, "lifted": [s.id for s in lifted]}


@router.post("/accounts/{login}/unblock-requests", status_code=201)
async def ask_unblock(
    services: Services, who: Customer, login: str, body: UnblockAsk
) -> dict[str, Any]:
    own_account(who, login)
    state = await account_state(services, login)
    if not state.open_suspensions and not state.denied:
        raise InvalidInput("the account is not suspended: nothing to unblock")
    ids = [s.id for s in state.open_suspensions]
    request = await services.unblocks.ask(login, body.message, ids)
    return request.as_dict()


@router.get("/unblock-requests")
async def list_unblocks(
    services: Services, who: Operator, open: bool = True
) -> list[dict[str, Any]]:
    return [r.as_dict() for r in await services.unblocks.listing(open_only=open)]


@router.post("/unblock-requests/{rid}/close")
async def close_unblock(services: Services, who: Admin, rid: str, body: Reason) -> dict[str, Any]:
    return (await services.unblocks.close(rid, actor=who.actor, reason=body.reason)).as_dict()
