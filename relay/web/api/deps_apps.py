"""What the application routers (`messages`, `events`) need, as FastAPI dependencies.

The HTTP app that includes these routers puts one `AppServices` in `app.state.apps`
(`app_services(...)` builds it from the process's Redis, settings and the very
`SubmissionService` the SMTP listeners use, so both doors share one set of rules). Requests
authenticate with an API key (`Authorization: Bearer rk_…`, `relay apikey add LOGIN`).
"""

from dataclasses import dataclass
from typing import Annotated, Any, NoReturn

import redis.asyncio as aioredis
from fastapi import Depends, HTTPException, Request

from relay.accounts.api_keys import ApiKey, ApiKeys
from relay.clock import Clock
from relay.config import Settings
from relay.errors import StoreUnavailable
from relay.events import EventStream, SuppressionList
from relay.submission.api import ApiSubmitter, Idempotency
from relay.submission.service import SubmissionService

__all__ = [
    "AppServices",
    "Caller",
    "Services",
    "api_key_of",
    "app_services",
    "problem",
    "services_of",
    "unavailable",
]


@dataclass(frozen=True)
class AppServices:
    keys: ApiKeys
    submitter: ApiSubmitter
    idempotency: Idempotency
    events: EventStream
    suppressions: SuppressionList
    clock: Clock


def app_services(
    redis: aioredis.Redis, settings: Settings, service: SubmissionService, clock: Clock
) -> AppServices:
    return AppServices(
        keys=ApiKeys(redis, clock, cache_for=settings.http.api_key_cache.seconds),
        submitter=ApiSubmitter(
            service, max_message_size=settings.submission.max_message_size, clock=clock
        ),
        idempotency=Idempotency(redis, ttl=settings.events.idempotency_for.seconds),
        events=EventStream(redis, clock, retention=settings.events.retention.seconds),
        suppressions=SuppressionList(redis, clock),
        clock=clock,
    )


async def services_of(request: Request) -> AppServices:
    """Async although it awaits nothing: FastAPI runs a plain `def` dependency on a worker
    thread, a hop that cost ~0.1 ms per request (more with the spool's fsync threads)."""
    found = getattr(request.app.state, "apps", None)
    if not isinstance(found, AppServices):
        raise RuntimeError("the HTTP app has no AppServices in app.state.apps")
    return found


Services = Annotated[AppServices, Depends(services_of)]


def problem(status: int, code: str, message: str, **extra: Any) -> HTTPException:
    return HTTPException(status, {"code": code, "message": message, **extra})


def unavailable(exc: StoreUnavailable) -> NoReturn:
    raise HTTPException(
        503,
        {"code": "unavailable", "message": "451 4.3.0 Temporary failure, please try again later"},
        headers={"Retry-After": "5"},
    ) from exc


async def api_key_of(request: Request, services: AppServices) -> ApiKey:
    """The API key of the request, or 401 (no key, malformed, unknown, revoked)."""
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    key = None
    if scheme.lower() == "bearer" and presented:
        try:
            key = await services.keys.authenticate(presented)
        except StoreUnavailable as exc:
            unavailable(exc)
    if key is None:
        raise HTTPException(
            401,
            {"code": "unauthorized", "message": "a valid API key is required (Bearer rk_…)"},
            headers={"WWW-Authenticate": "Bearer"},
        )
    return key


async def _caller(request: Request, services: Services) -> ApiKey:
    return await api_key_of(request, services)


Caller = Annotated[ApiKey, Depends(_caller)]
