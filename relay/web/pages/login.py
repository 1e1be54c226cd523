"""Log in and out: customers with their SMTP credential, operators with their own account."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from relay.web.auth import customer_login, operator_login, same_token
from relay.web.deps import Services, csrf_token
from relay.web.errors import CsrfFailed
from relay.web.templating import render

router = APIRouter(include_in_schema=False)


def client_ip(request: Request) -> str:
    """The peer address as the brute-force guard counts it (the proxy's, behind one)."""
    return request.client.host if request.client else "?"


def check_form_csrf(request: Request, given: str) -> None:
    if not same_token(str(request.session.get("csrf", "")), given):
        raise CsrfFailed("missing or wrong CSRF token: reload the page and try again")


def _safe_next(target: str, default: str) -> str:
    """Only a path of this site (never `//host`, never a URL): no open redirect."""
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return default


@router.get("/")
async def root(request: Request) -> Response:
    kind = request.session.get("kind")
    target = "/console" if kind == "operator" else "/home" if kind == "customer" else "/login"
    return RedirectResponse(target, status_code=303)


@router.get("/login")
async def login_form(request: Request, next: str = "/home") -> Response:
    return render(request, "login.html", {"error": "", "next": next, "operator": False})


@router.get("/console/login")
async def operator_form(request: Request, next: str = "/console") -> Response:
    return render(request, "login.html", {"error": "", "next": next, "operator": True})


async def _login(
    request: Request, services: Services, operator: bool, login: str, password: str, next: str
) -> Response:
    ip = client_ip(request)
    if operator:
        outcome = await operator_login(services.guard, services.operators, login, password, ip)
    else:
        outcome = await customer_login(services.guard, services.accounts, login, password, ip)
    if outcome.who is None:
        context = {"error": outcome.error, "next": next, "operator": operator}
        return render(request, "login.html", context, outcome.status)
    request.session.clear()  # a new session: no fixation of a token set before the login
    request.session.update({"kind": "operator" if operator else "customer", "name": outcome.who})
    csrf_token(request)
    default = "/console" if operator else "/home"
    return RedirectResponse(_safe_next(next, default), status_code=303)


@router.post("/login")
async def login(
    request: Request,
    services: Services,
    login: Annotated[str, Form()],
    password: Annotated[str, Form()],
    csrf: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/home",
) -> Response:
    check_form_csrf(request, csrf)
    return await _login(request, services, False, login, password, next)


@router.post("/console/login")
async def console_login(
    request: Request,
    services: Services,
    login: Annotated[str, Form()],
    password: Annotated[str, Form()],
    csrf: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/console",
) -> Response:
    check_form_csrf(request, csrf)
    return await _login(request, services, True, login, password, next)


@router.post("/logout")
async def logout(request: Request, csrf: Annotated[str, Form()] = "") -> Response:
    check_form_csrf(request, csrf)
    was_operator = request.session.get("kind") == "operator"
    request.session.clear()
    return RedirectResponse("/console/login" if was_operator else "/login", status_code=303)
