"""The queue: filter, show, hold, release, retry, delete (as `relay queue ...`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from relay.web import actions
from relay.web.deps import Admin, Operator, Services
from relay.web.views import queued_mail

router = APIRouter(prefix="/api/v1", tags=["queue"])


@router.get("/queue")
async def list_queue(
    services: Services,
    who: Operator,
    account: str = "",
    limit: Annotated[int, Query(ge=1, le=10000)] = 100,
) -> dict[str, Any]:
    """Oldest first; `account` filters (with each message's jobs and last replies)."""
    if account:
        messages = await queued_mail(services, account, limit)
    else:
        messages = [m.as_dict() for m in await services.queue.list_messages(limit)]
    return {"total": await services.queue.count(), "messages": messages}


@router.get("/queue/{mid}")
async def show_message(services: Services, who: Operator, mid: str) -> dict[str, Any]:
    meta = await services.queue.meta(mid)
    jobs = await services.queue.jobs_of(mid)
    return {
        **meta.as_dict(),
        "spooled": services.queue.spool.exists(mid),
        "jobs": [j.as_dict() for j in jobs],
    }


@router.post("/queue/account/{login}/{verb}")
async def act_on_account(
    services: Services, who: Admin, login: str, verb: actions.QueueVerb
) -> dict[str, str]:
    """As `relay queue VERB --account LOGIN` (hold: mail it queues later is held too)."""
    return {"done": await actions.queue_account_action(services, who, login, verb)}


@router.post("/queue/{mid}/{verb}")
async def act(services: Services, who: Admin, mid: str, verb: actions.QueueVerb) -> dict[str, str]:
    return {"done": await actions.queue_action(services, who, mid, verb)}
