"""Activity reports as JSON and CSV (operators), and a customer's own outcomes."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import Response

from relay.content.report import content_report
from relay.content.stats import ContentStats
from relay.web.deps import Anyone, Operator, Services, existing_account
from relay.web.views import reports, rows_csv

router = APIRouter(prefix="/api/v1", tags=["reports"])

PeriodParam = Literal["24h", "30d"]
ReportName = Literal["senders", "accounts", "ips", "outcomes"]


@router.get("/reports")
async def all_reports(
    services: Services, who: Operator, period: PeriodParam = "24h"
) -> dict[str, Any]:
    """Top senders by recipients, active accounts, per egress IP volumes and refusals, per
    account delivered/deferred/bounced, over the last 24 h or 30 days."""
    return {"period": period, **await reports(services, period)}


@router.get("/reports/content")
async def content(services: Services, who: Operator) -> dict[str, Any]:
    """As `relay report content`: viruses by signature and account, spam verdicts by
    account, scanner failures, the quarantine by kind and by account (since the start)."""
    return await content_report(ContentStats(services.redis), services.quarantine.store)


@router.get("/reports/{name}.csv", response_class=Response)
async def report_csv(
    services: Services, who: Operator, name: ReportName, period: PeriodParam = "24h"
) -> Response:
    rows = (await reports(services, period))[name]
    return Response(
        rows_csv(rows),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}-{period}.csv"'},
    )


@router.get("/accounts/{login}/report")
async def account_report(
    services: Services, who: Anyone, login: str, period: PeriodParam = "24h"
) -> dict[str, Any]:
    """One account's recipients delivered, deferred (attempts) and bounced."""
    await existing_account(services, who, login)
    totals = await services.activity.totals(services.clock.now(), period)
    row = totals.of("a").get(login, {"delivered": 0, "deferred": 0, "bounced": 0})
    recent = await services.activity.recent(login)
    return {"account": login, "period": period, **row, "recent": recent}
