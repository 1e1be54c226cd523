"""The customer's home: 24 h volume against the quota, the banner while suspended, password
change (which lifts a first offence, as `relay account passwd` does), an unblock request to
support, and the mail still queued with its last remote reply."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from relay.errors import InvalidInput
from relay.web.auth import customer_login
from relay.web.deps import Customer, Services
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
