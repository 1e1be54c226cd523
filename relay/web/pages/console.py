"""The operators' console: dashboard, suspensions, queue, quarantine, lists, IP pool, accounts,
audit."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse, Response

from relay.content.quarantine import Held
from relay.content.report import content_report
from relay.content.stats import ContentStats
from relay.errors import NotFound
from relay.web import actions, content_actions
from relay.web.chart import hourly_svg
from relay.web.deps import Admin, Operator, Services
from relay.web.pages.forms import ActionField, KindField, ReasonField, ValueField
from relay.web.templating import render
from relay.web.views import queued_mail, reports, usage_view

router = APIRouter(prefix="/console", include_in_schema=False)


def _back(path: str, done: str) -> Response:
    return RedirectResponse(f"{path}?{urlencode({'done': done[:300]})}", status_code=303)


def _done(request: Request) -> str:
    return request.query_params.get("done", "")[:300]


@router.get("")
async def dashboard(request: Request, services: Services, who: Operator) -> Response:
    now = services.clock.now()
    oldest = await services.queue.list_messages(1)
    day = (await services.activity.totals(now, "24h")).of("a").values()
    outcomes = {k: sum(row[k] for row in day) for k in ("delivered", "deferred", "bounced")}
    context = {
        "outcomes": outcomes,
        "depth": await services.queue.count(),
        "oldest": oldest[0] if oldest else None,
        "oldest_age": round(now - oldest[0].created_at) if oldest else 0,
        "suspensions": await services.suspensions.store.listing(open_only=True),
        "ips": await services.egress.describe(services.settings.delivery.egress),
        "unblocks": await services.unblocks.listing(open_only=True),
        "role": who.role,
    }
    return render(request, "console/dashboard.html", context)


@router.get("/suspensions")
async def suspensions(
    request: Request, services: Services, who: Operator, all: bool = False
) -> Response:
    found = await services.suspensions.store.listing(open_only=not all)
    return render(request, "console/suspensions.html", {"suspensions": found, "all": all})


@router.get("/suspensions/{sid}")
async def suspension(request: Request, services: Services, who: Operator, sid: str) -> Response:
    s = await services.suspensions.store.get(sid)
    context = {
        "s": s,
        "role": who.role,
        "done": _done(request),
        "unblocks": [
            r for r in await services.unblocks.listing(open_only=False) if sid in r.suspensions
        ],
    }
    return render(request, "console/suspension.html", context)


@router.post("/suspensions/{sid}/lift")
async def lift(
    services: Services,
    who: Admin,
    sid: str,
    reason: Annotated[str, Form()],
    force: Annotated[bool, Form()] = False,
) -> Response:
    s = await actions.lift(services, who, sid, reason, force)
    return _back(f"/console/suspensions/{sid}", f"lifted {s.id}: {s.account} can send again")


@router.post("/suspensions/{sid}/deny")
async def deny(
    services: Services, who: Admin, sid: str, reason: Annotated[str, Form()]
) -> Response:
    s = await actions.deny(services, who, sid, reason)
    return _back(f"/console/suspensions/{sid}", f"denied {s.id}: {s.account} refused for good")


@router.get("/unblocks")
async def unblocks(request: Request, services: Services, who: Operator) -> Response:
    found = await services.unblocks.listing(open_only=False)
    return render(request, "console/unblocks.html", {"requests": found, "done": _done(request)})


@router.post("/unblocks/{rid}/close")
async def close_unblock(
    services: Services, who: Admin, rid: str, reason: Annotated[str, Form()]
) -> Response:
    await services.unblocks.close(rid, actor=who.actor, reason=actions._reason(reason))
    return _back("/console/unblocks", f"request {rid} answered")


@router.get("/queue")
async def queue(
    request: Request,
    services: Services,
    who: Operator,
    account: str = "",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    if account:
        messages = await queued_mail(services, account, limit)
    else:
        messages = [m.as_dict() for m in await services.queue.list_messages(limit)]
    context = {
        "messages": messages,
        "total": await services.queue.count(),
        "account": account,
        "done": _done(request),
        "role": who.role,
    }
    return render(request, "console/queue.html", context)


@router.post("/queue/account/{login}/{verb}")
async def queue_account_action(services: Services, who: Admin, login: str, verb: str) -> Response:
    if verb not in ("hold", "release", "retry", "delete"):
        raise NotFound(f"no action {verb!r}")
    done = await actions.queue_account_action(services, who, login, verb)  # type: ignore[arg-type]
    return RedirectResponse(
        "/console/queue?" + urlencode({"account": login, "done": done}), status_code=303
    )


@router.post("/accounts/{login}/suspend")
async def suspend(
    services: Services,
    who: Admin,
    login: str,
    reason: Annotated[str, Form()],
    kind: Annotated[str, Form()] = "admin",
) -> Response:
    s = await actions.suspend(services, who, login, kind, reason)
    return _back(f"/console/suspensions/{s.id}", f"suspension {s.id}: {login} ({s.kind.value})")


@router.get("/queue/{mid}")
async def queued(request: Request, services: Services, who: Operator, mid: str) -> Response:
    meta = await services.queue.meta(mid)
    context = {
        "m": meta,
        "jobs": await services.queue.jobs_of(mid),
        "spooled": services.queue.spool.exists(mid),
        "role": who.role,
        "done": _done(request),
    }
    return render(request, "console/message.html", context)


@router.post("/queue/{mid}/{verb}")
async def queue_action(services: Services, who: Admin, mid: str, verb: str) -> Response:
    if verb not in ("hold", "release", "retry", "delete"):
        raise NotFound(f"no action {verb!r}")
    done = await actions.queue_action(services, who, mid, verb)  # type: ignore[arg-type]
    return _back("/console/queue" if verb == "delete" else f"/console/queue/{mid}", done)


@router.get("/ips")
async def ips(request: Request, services: Services, who: Operator) -> Response:
    reports = await services.egress.describe(services.settings.delivery.egress)
    return render(
        request, "console/ips.html", {"ips": reports, "role": who.role, "done": _done(request)}
    )


@router.post("/ips/{ip}/disable")
async def disable_ip(
    services: Services, who: Admin, ip: str, reason: Annotated[str, Form()]
) -> Response:
    return _back("/console/ips", await actions.disable_ip(services, who, ip, reason))


@router.post("/ips/{ip}/enable")
async def enable_ip(services: Services, who: Admin, ip: str) -> Response:
    return _back("/console/ips", await actions.enable_ip(services, who, ip))


@router.get("/accounts")
async def accounts(request: Request, services: Services, who: Operator) -> Response:
    return render(request, "console/accounts.html", {"accounts": await services.accounts.list()})


@router.get("/accounts/{login}")
async def account(request: Request, services: Services, who: Operator, login: str) -> Response:
    found = await services.accounts.require(login)
    now = services.clock.now()
    usage = await services.quota.usage(login, now)
    context = {
        "a": found,
        "usage": usage_view(usage, now),
        "chart": hourly_svg(usage.hourly, label=f"{login}: recipients per hour, last 24 h"),
        "plans": usage.plans,
        "active_plans": usage.active_plans,
        "suspensions": await services.suspensions.store.of_account(login),
        "audit": await services.audit.entries(account=login, limit=50),
        "role": who.role,
        "done": _done(request),
    }
    return render(request, "console/account.html", context)


@router.get("/reports")
async def reports_page(
    request: Request, services: Services, who: Operator, period: str = "24h"
) -> Response:
    period = "30d" if period == "30d" else "24h"
    context = {
        "period": period,
        **await reports(services, period),
        "content": await content_report(ContentStats(services.redis), services.quarantine.store),
    }
    return render(request, "console/reports.html", context)


@router.post("/accounts/{login}/plans")
async def add_plan(
    services: Services,
    who: Admin,
    login: str,
    daily: Annotated[int, Form(gt=0, le=10**9)],
    per_minute: Annotated[str, Form()] = "",
) -> Response:
    minute = int(per_minute) if per_minute.strip().isdigit() else None
    plan = await actions.add_plan(services, who, login, daily, minute or None)
    return _back(f"/console/accounts/{login}", f"plan {plan.id} added: {daily}/24h")


@router.post("/accounts/{login}/plans/{plan_id}/remove")
async def remove_plan(services: Services, who: Admin, login: str, plan_id: str) -> Response:
    await actions.remove_plan(services, who, login, plan_id)
    return _back(f"/console/accounts/{login}", f"plan {plan_id} removed")


@router.get("/audit")
async def audit(
    request: Request,
    services: Services,
    who: Operator,
    account: str = "",
    limit: Annotated[int, Query(ge=1, le=5000)] = 200,
) -> Response:
    entries = await services.audit.entries(account=account, limit=limit)
    context = {"entries": list(reversed(entries)), "account": account, "limit": limit}
    return render(request, "console/audit.html", context)


@router.get("/audit.csv")
async def audit_csv(
    services: Services,
    who: Operator,
    account: str = "",
    limit: Annotated[int, Query(ge=1, le=100000)] = 10000,
) -> Response:
    entries = await services.audit.entries(account=account, limit=limit)
    name = f"audit-{account or 'all'}.csv".replace('"', "")
    return Response(
        actions.audit_csv(entries),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get("/quarantine")
async def quarantine(
    request: Request,
    services: Services,
    who: Operator,
    account: str = "",
    kind: Literal["", "malware", "spam"] = "",
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> Response:
    held = await services.quarantine.store.listing(
        account=account, kind=Held(kind) if kind else None, limit=limit
    )
    context = {
        "held": held,
        "account": account,
        "kind": kind,
        "role": who.role,
        "done": _done(request),
    }
    return render(request, "console/quarantine.html", context)


@router.post("/quarantine/{qid}/{verb}")
async def act_on_held(
    services: Services, who: Admin, qid: str, verb: Literal["release", "delete"]
) -> Response:
    """Malware too (an operator's release is audited as any other)."""
    if verb == "release":
        return _back("/console/quarantine", await content_actions.release_held(services, who, qid))
    return _back("/console/quarantine", await content_actions.delete_held(services, who, qid))


@router.get("/lists")
async def lists(request: Request, services: Services, who: Operator) -> Response:
    context = {"entries": await services.lists.show(None), "role": who.role, "done": _done(request)}
    return render(request, "console/lists.html", context)


@router.post("/lists")
async def add_entry(
    services: Services,
    who: Admin,
    kind: KindField,
    action: ActionField,
    value: ValueField,
    account: Annotated[str, Form(max_length=256)] = "",
    reason: ReasonField = "",
) -> Response:
    """Into the global list (no account) or an account's."""
    entry = await content_actions.add_entry(
        services, who, account.strip(), kind, action, value, reason
    )
    return _back(
        "/console/lists", f"{entry.scope}: {entry.action.value} {entry.kind.value} {entry.value}"
    )


@router.post("/lists/remove")
async def remove_entry(
    services: Services,
    who: Admin,
    kind: KindField,
    value: ValueField,
    account: Annotated[str, Form(max_length=256)] = "",
) -> Response:
    done = await content_actions.remove_entry(services, who, account.strip(), kind, value)
    return _back("/console/lists", done)
