"""Who is asking, and may they: FastAPI dependencies shared by the pages and the API.

Rules (issue 12): no or wrong credentials → 401; a customer asking for another account →
404 (the same answer as an account that does not exist, so logins cannot be probed); a
viewer trying to act → 403; a form or an API call riding on the session cookie without the
session's CSRF token → 403. Bearer tokens are not cookies: no CSRF token needed with them.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Request

from relay.web.auth import Principal, Role, same_token
from relay.web.errors import CsrfFailed, Forbidden, NotFoundError, Unauthenticated
from relay.web.services import WebServices

__all__ = [
    "Acting",
    "Admin",
    "Anyone",
    "Customer",
    "OnAccount",
    "Operator",
    "Services",
    "csrf_token",
    "existing_account",
    "own_account",
    "principal",
]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def get_services(request: Request) -> WebServices:
    """Async so that FastAPI calls it in the loop (a `def` dependency runs on a thread)."""
    services: WebServices = request.app.state.services
    return services


Services = Annotated[WebServices, Depends(get_services)]


def csrf_token(request: Request) -> str:
    """The session's CSRF token (made on first use; the login form gets one too)."""
    token = request.session.get("csrf")
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(24)
        request.session["csrf"] = token
    return token


async def _check_csrf(request: Request) -> None:
    if request.method in SAFE_METHODS:
        return
    expected = request.session.get("csrf", "")
    given = request.headers.get("x-csrf-token", "")
    if not given and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()
        value = form.get("csrf", "")
        given = value if isinstance(value, str) else ""
    if not same_token(str(expected), given):
        raise CsrfFailed("missing or wrong CSRF token: reload the page and try again")


async def principal(request: Request, services: Services) -> Principal:
    """The authenticated caller, from a bearer token or the session cookie; 401 otherwise.
    Operators and accounts are looked up on every request, so a removed operator or account,
    or a changed role, takes effect at once even for a live session."""
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("use Authorization: Bearer <token>")
        operator = await services.operators.by_token(token.strip())
        if operator is None:
            raise Unauthenticated("unknown or revoked token")
        return Principal("operator", operator.name, operator.role)
    kind, name = request.session.get("kind"), request.session.get("name")
    if not isinstance(kind, str) or not isinstance(name, str):
        raise Unauthenticated("log in first")
    if kind == "operator":
        operator = await services.operators.get(name)
        if operator is None:
            request.session.clear()
            raise Unauthenticated("log in first")
        who = Principal("operator", name, operator.role)
    elif kind == "customer" and await services.accounts.get(name) is not None:
        who = Principal("customer", name)
    else:
        request.session.clear()
        raise Unauthenticated("log in first")
    await _check_csrf(request)
    return who


Anyone = Annotated[Principal, Depends(principal)]


async def operator(who: Anyone) -> Principal:
    if who.kind != "operator":
        raise NotFoundError("not found")  # a customer never learns the console exists
    return who


Operator = Annotated[Principal, Depends(operator)]


def _admin_only(who: Principal) -> None:
    if who.role is not Role.ADMIN:
        raise Forbidden(f"operator {who.name} is a viewer: only an admin may do this")


async def admin(who: Operator) -> Principal:
    _admin_only(who)
    return who


Admin = Annotated[Principal, Depends(admin)]


async def customer(who: Anyone) -> Principal:
    if who.kind != "customer":
        raise NotFoundError("this page is the customers' (log in with an SMTP credential)")
    return who


Customer = Annotated[Principal, Depends(customer)]


async def acting(who: Anyone) -> Principal:
    """A customer acting on their own things, or an admin: a viewer may only look."""
    if who.kind == "operator":
        _admin_only(who)
    return who


Acting = Annotated[Principal, Depends(acting)]


async def on_account(who: Acting, login: str) -> Principal:
    """`Acting` on the account of the path's `{login}`: checked before the request's body,
    so a customer naming another account gets 404 whatever they send."""
    own_account(who, login)
    return who


OnAccount = Annotated[Principal, Depends(on_account)]


def own_account(who: Principal, login: str) -> None:
    """A customer sees only their own account: anything else is 404, like a missing one."""
    if who.kind == "customer" and who.name != login:
        raise NotFoundError(f"no account {login!r}")


async def existing_account(services: WebServices, who: Principal, login: str) -> None:
    """`own_account`, and the account exists (404 otherwise)."""
    own_account(who, login)
    await services.accounts.require(login)
