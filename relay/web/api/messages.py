"""`POST /v1/messages` (send) and `GET /v1/messages/{id}` (per-recipient status, history)."""

import hashlib
import json

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.routing import Route

from relay.errors import StoreUnavailable
from relay.events.model import recipient_states
from relay.submission.compose import FieldError, compose
from relay.web.api.deps_apps import (
    Caller,
    Services,
    api_key_of,
    problem,
    services_of,
    unavailable,
)

__all__ = ["SEND_ROUTE", "router"]

router = APIRouter(prefix="/v1", tags=["messages"])

MAX_KEY = 255


async def send_message(request: Request) -> JSONResponse:
    """Queue a message (JSON: from, to/cc/bcc, subject, text/html, attachments, headers; or
    raw). 202 with the queue id; 422 names the field at fault; 429 + Retry-After for a limit
    (the SMTP wording); 403 when the account is suspended; 401 without a valid key."""
    # A plain Starlette endpoint (no FastAPI dependencies or parameters): see SEND_ROUTE.
    services = await services_of(request)
    caller = await api_key_of(request, services)
    body = await request.body()
    try:
        message = compose(json.loads(body))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise problem(422, "bad_request", "the body is not JSON", field="body") from None
    except FieldError as exc:
        raise problem(422, "bad_field", exc.reason, field=exc.field) from None
    key = request.headers.get("idempotency-key", "")
    if len(key) > MAX_KEY:
        raise problem(422, "bad_field", f"at most {MAX_KEY} characters", field="Idempotency-Key")
    fingerprint = hashlib.sha256(body).hexdigest() if key else ""
    peer = request.client.host if request.client else "?"
    try:
        if key and (earlier := await services.idempotency.claim(caller.login, key, fingerprint)):
            return JSONResponse(earlier.body, earlier.status, earlier.headers)
        try:
            answer = await services.submitter.send(caller.login, message, peer)
        except BaseException:
            if key:
                await services.idempotency.forget(caller.login, key)
            raise
        if key:
            await services.idempotency.settle(caller.login, key, fingerprint, answer)
    except StoreUnavailable as exc:
        unavailable(exc)
    return JSONResponse(answer.body, answer.status, answer.headers)


router.add_api_route("/messages", send_message, methods=["POST"], status_code=202)

SEND_ROUTE = Route("/v1/messages", send_message, methods=["POST"])
"""The send API as a plain Starlette route, which `create_app` matches before every other:
it is the hot route, and FastAPI's dispatch of it (an included router's routes matched in
turn, then the APIRoute's request handling) cost 45-150 us of the ~1.5 ms a message costs.
The APIRoute above serves it in an app that only includes the routers, and documents it."""


@router.get("/messages/{message_id}")
async def message_status(message_id: str, caller: Caller, services: Services) -> dict[str, object]:
    """Each recipient's latest state and the message's whole history (within retention)."""
    try:
        events = await services.events.of_message(caller.login, message_id)
    except StoreUnavailable as exc:
        unavailable(exc)
    if not events:
        raise HTTPException(404, {"code": "not_found", "message": f"no message {message_id}"})
    return {
        "id": message_id,
        "recipients": recipient_states(events),
        "events": [e.as_dict() for e in events],
    }
