"""What the pages and the API show, computed once from the services: a customer's usage and
state, an account's queued mail, the dashboard. Pure shaping over what the services return."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any

from quota import Usage
from relay.abuse.store import Suspension
from relay.errors import NotFound
from relay.reports import account_outcomes, active_accounts, ip_volumes, top_senders
from relay.submission.policy import format_wait
from relay.web.services import WebServices
from reputation import Status

__all__ = [
    "REPORTS",
    "AccountState",
    "account_state",
    "banner",
    "queued_mail",
    "reports",
    "rows_csv",
    "usage_view",
]


@dataclass(frozen=True)
class AccountState:
    usage: Usage
    open_suspensions: list[Suspension]
    denied: bool

    @property
    def blocked(self) -> bool:
        return bool(self.open_suspensions) or self.denied or self.usage.state != "active"


async def account_state(services: WebServices, login: str) -> AccountState:
    now = services.clock.now()
    usage = await services.quota.usage(login, now)
    history = await services.suspensions.store.of_account(login)
    return AccountState(
        usage=usage,
        open_suspensions=[s for s in history if s.status is Status.OPEN],
        denied=any(s.status is Status.DENIED for s in history),
    )


def usage_view(usage: Usage, now: float) -> dict[str, Any]:
    percent = 0 if usage.daily <= 0 else min(100, round(100 * usage.used / usage.daily))
    return {
        **usage.as_dict(),
        "percent": percent,
        "next_free_in": format_wait(usage.next_free_at - now) if usage.next_free_at else "",
    }


def banner(state: AccountState, support: str) -> dict[str, str] | None:
    """The warning a customer reads while the service is suspended (contract 003): why, and
    what to do. None while sending is allowed."""
    if state.denied:
        return {
            "reason": "reinstatement was refused after repeated abuse",
            "todo": f"the account cannot send any more; contact {support}",
        }
    if state.open_suspensions:
        s = state.open_suspensions[0]
        if s.terms.user_may_lift:
            todo = (
                "this is a first offence: change your password below and sending resumes at"
                f" once; or ask {support} with the form below"
            )
        else:
            todo = f"only support can lift it: send an unblock request below or contact {support}"
        return {"reason": f"{s.kind.value}: {s.reason}", "todo": todo, "id": s.id}
    usage = state.usage
    if usage.state == "suspended (quota)":
        return {
            "reason": f"the daily quota of {usage.daily} recipients is used up",
            "todo": "sending resumes by itself as the 24 h window slides (next free slot below)",
        }
    if usage.state == "expired":
        return {"reason": "no active plan", "todo": f"renew your plan with {support}"}
    if usage.state != "active":
        return {"reason": usage.state, "todo": f"contact {support}"}
    return None


async def queued_mail(services: WebServices, login: str, limit: int = 20) -> list[dict[str, Any]]:
    """The account's mail still in the queue, with each job's last remote reply."""
    out = []
    for mid in (await services.queue.messages_of(login))[:limit]:
        try:
            meta = await services.queue.meta(mid)
            jobs = await services.queue.jobs_of(mid)
        except NotFound:
            continue  # delivered meanwhile
        out.append({**meta.as_dict(), "jobs": [j.as_dict() for j in jobs]})
    return sorted(out, key=lambda m: m["created_at"], reverse=True)


REPORTS = ("senders", "accounts", "ips", "outcomes")


async def reports(services: WebServices, period: str) -> dict[str, list[dict[str, Any]]]:
    """The four activity reports over `period` (24h or 30d): top senders by recipients,
    active accounts, per egress IP volumes and refusals, per account outcomes."""
    now = services.clock.now()
    totals = await services.activity.totals(now, "30d" if period == "30d" else "24h")
    window: dict[str, int] = {}
    for account in await services.accounts.list():
        window[account.login] = (await services.quota.usage(account.login, now)).used
    if period == "30d":
        senders = {name: row["delivered"] + row["bounced"] for name, row in totals.of("a").items()}
    else:
        senders = window  # the quota's exact rolling window: recipients accepted
    recent = [login for login, n in window.items() if n > 0]
    pool = [e.ip for e in services.settings.delivery.egress]
    return {
        "senders": top_senders(senders, limit=50),
        "accounts": [{"account": a} for a in active_accounts(totals, recent)],
        "ips": ip_volumes(totals, pool),
        "outcomes": account_outcomes(totals),
    }


def rows_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(rows)
    return out.getvalue()
