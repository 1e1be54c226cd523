"""The customer's home: 24 h volume against the quota, the banner while suspended, password
change (which lifts a first offence, as `relay account passwd` does), an unblock request to
support, the mail still queued with its last remote reply, the mail held by the content scan
(suspected spam to deliver or delete) and the account's own allow and deny lists."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from relay.errors import InvalidInput
from relay.web import content_actions
from relay.web.auth import customer_login
from relay.web.deps import Customer, Services
from relay.web.pages.forms import ActionField, KindField, ReasonField, ValueField
from relay.web.pages.login import check_form_csrf, client_ip
from relay.web.templating import render
from relay.web.views import account_state, banner, queued_mail, usage_view

router = APIRouter(include_in_schema=False)


async def _home(
    request: Request,
    services: Services,
    login: str,
    notice: str = "",
    error: str = "",
    status: int = 200,
) -> Response:
    state = await account_state(services, login)
    context = {
        "usage": usage_view(state.usage, services.clock.now()),
        "banner": banner(state, services.settings.reputation.support),
        "suspensions": state.open_suspensions,
        "requests": [
            r for r in await services.unblocks.listing(open_only=True) if r.account == login
        ],
        "queued": await queued_mail(services, login),
        "recent": await services.activity.recent(login),
        "held": await services.quarantine.store.listing(account=login, limit=200),
        "entries": await services.lists.show(login),
        "notice": notice or request.query_params.get("done", "")[:200],
        "error": error,
    }
    return render(request, "home.html", context, status)


@router.get("/home")
async def home(request: Request, services: Services, who: Customer) -> Response:
    return await _home(request, services, who.name)


@router.post("/home/password")
async def change_password(
    request: Request,
    services: Services,
    who: Customer,
    current: Annotated[str, Form()],
    new: Annotated[str, Form()],
    again: Annotated[str, Form()],
    csrf: Annotated[str, Form()] = "",
) -> Response:
    check_form_csrf(request, csrf)
    if new != again:
        return await _home(
            request, services, who.name, error="the two new passwords differ", status=400
        )
    checked = await customer_login(
        services.guard, services.accounts, who.name, current, client_ip(request)
    )
    if checked.who is None:
        error = f"current password: {checked.error}"
        return await _home(request, services, who.name, error=error, status=checked.status)
    try:
        await services.accounts.set_password(who.name, new)
    except InvalidInput as exc:
        return await _home(request, services, who.name, error=str(exc), status=400)
    await services.audit.append(actor=who.actor, action="password-change", account=who.name)
    lifted = await services.suspensions.password_changed(who.name)
    done = "password changed"
    if lifted:
        done += f"; suspension {', '.join(s.id for s in lifted)} lifted: you can send again"
    return RedirectResponse("/home?" + urlencode({"done": done}), status_code=303)


@router.post("/home/unblock")
async def ask_unblock(
    request: Request,
    services: Services,
    who: Customer,
    message: Annotated[str, Form()],
    csrf: Annotated[str, Form()] = "",
) -> Response:
    check_form_csrf(request, csrf)
    state = await account_state(services, who.name)
    if not state.open_suspensions and not state.denied:
        error = "the account is not suspended: nothing to unblock"
        return await _home(request, services, who.name, error=error, status=400)
    try:
        request_ = await services.unblocks.ask(
            who.name, message, [s.id for s in state.open_suspensions]
        )
    except InvalidInput as exc:
        return await _home(request, services, who.name, error=str(exc), status=400)
    done = f"request {request_.id} sent to support"
    return RedirectResponse("/home?" + urlencode({"done": done}), status_code=303)


def _done(done: str) -> Response:
    return RedirectResponse("/home?" + urlencode({"done": done[:300]}), status_code=303)


@router.post("/home/quarantine/{qid}/{verb}")
async def act_on_held(
    services: Services, who: Customer, qid: str, verb: Literal["release", "delete"]
) -> Response:
    """Deliver (on the quota) or delete suspected spam; malware is refused with 403."""
    if verb == "release":
        return _done(await content_actions.release_held(services, who, qid))
    return _done(await content_actions.delete_held(services, who, qid))


@router.post("/home/lists")
async def add_entry(
    request: Request,
    services: Services,
    who: Customer,
    kind: KindField,
    action: ActionField,
    value: ValueField,
    reason: ReasonField = "",
) -> Response:
    try:
        entry = await content_actions.add_entry(
            services, who, who.name, kind, action, value, reason
        )
    except InvalidInput as exc:
        return await _home(request, services, who.name, error=str(exc), status=400)
    return _done(f"{entry.action.value} {entry.kind.value} {entry.value} added to your list")


@router.post("/home/lists/remove")
async def remove_entry(
    services: Services,
    who: Customer,
    kind: KindField,
    value: ValueField,
) -> Response:
    return _done(await content_actions.remove_entry(services, who, who.name, kind, value))
