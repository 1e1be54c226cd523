"""`/api/v1/session`: log in for API calls riding on the session cookie (browsers, scripts
of customers). Scripts of operators use a bearer token instead (`relay operator token`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from relay.web.api.models import Credentials
from relay.web.auth import customer_login, operator_login
from relay.web.deps import Anyone, Services, csrf_token
from relay.web.errors import Unauthenticated, WebError
from relay.web.pages.login import client_ip

router = APIRouter(prefix="/api/v1", tags=["session"])


class _Refused(WebError):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@router.post("/session")
async def open_session(request: Request, services: Services, body: Credentials) -> dict[str, Any]:
    """Log in (through the same brute-force guard as SMTP AUTH). The answer's `csrf` goes in
    the `X-CSRF-Token` header of every later POST riding on the cookie."""
    ip = client_ip(request)
    login, password = body.login, body.password
    if body.kind == "operator":
        outcome = await operator_login(services.guard, services.operators, login, password, ip)
    else:
        outcome = await customer_login(services.guard, services.accounts, login, password, ip)
    if outcome.who is None:
        if outcome.status == 401:
            raise Unauthenticated(outcome.error)
        raise _Refused(outcome.error, outcome.status)
    request.session.clear()
    request.session.update({"kind": body.kind, "name": outcome.who})
    return {"kind": body.kind, "name": outcome.who, "csrf": csrf_token(request)}


@router.get("/session")
async def whoami(who: Anyone) -> dict[str, Any]:
    """Who the credentials (cookie or token) belong to."""
    return {"kind": who.kind, "name": who.name, "role": who.role.value if who.role else None}


@router.delete("/session")
async def close_session(request: Request, who: Anyone) -> dict[str, str]:
    request.session.clear()
    return {"status": "logged out"}
