"""What an operator does from the browser or the API: the same service calls as `relay
suspension|queue|ip` (relay/cli/*), each written to the audit log with the operator's name.

The suspension service audits lifts and denials itself; queue and IP actions have no audit
of their own in the services, so they are audited here (the CLI logs them to its terminal).
"""

from __future__ import annotations

import csv
import io
import ipaddress
from collections.abc import Iterable
from typing import Any, Literal

from quota import Plan
from quota.errors import InvalidValue
from relay.abuse.audit import AuditEntry
from relay.abuse.store import Suspension
from relay.accounts.provisioning import new_plan_id
from relay.errors import InvalidInput, NotFound
from relay.web.auth import Principal
from relay.web.services import WebServices
from reputation import Kind

__all__ = [
    "QueueVerb",
    "audit_csv",
    "deny",
    "disable_ip",
    "enable_ip",
    "lift",
    "queue_account_action",
    "queue_action",
    "suspend",
]

QueueVerb = Literal["hold", "release", "retry", "delete"]


def _reason(text: str) -> str:
    reason = " ".join(text.split())
    if not reason:
        raise InvalidInput("give a reason (it goes to the audit log)")
    return reason[:500]


async def lift(
    services: WebServices, who: Principal, sid: str, reason: str, force: bool = False
) -> Suspension:
    return await services.suspensions.lift(
        sid, actor=who.actor, reason=_reason(reason), force=force
    )


async def deny(services: WebServices, who: Principal, sid: str, reason: str) -> Suspension:
    return await services.suspensions.deny(sid, actor=who.actor, reason=_reason(reason))


async def queue_action(
    services: WebServices, who: Principal, message_id: str, verb: QueueVerb
) -> str:
    """As `relay queue VERB ID`; the sentence the CLI prints."""
    queue = services.queue
    meta = await queue.meta(message_id)  # NotFound → 404 before anything changes
    if verb == "hold":
        done = f"held {message_id}" if await queue.hold(message_id) else "was already held"
    elif verb == "release":
        done = f"released {message_id}" if await queue.release(message_id) else "was not held"
    elif verb == "retry":
        done = f"{message_id}: {await queue.retry(message_id)} job(s) due now"
    else:
        await queue.delete(message_id)
        done = f"deleted {message_id}"
    await services.audit.append(
        actor=who.actor, action=f"queue-{verb}", account=meta.account, subject=message_id
    )
    return done


async def queue_account_action(
    services: WebServices, who: Principal, login: str, verb: QueueVerb
) -> str:
    """As `relay queue VERB --account LOGIN`; the sentence the CLI prints."""
    queue = services.queue
    await services.accounts.require(login)
    if verb == "hold":
        done = f"held {await queue.hold_account(login)} message(s) of {login}; later mail too"
    elif verb == "release":
        if login not in await queue.held_accounts() and not await queue.messages_of(login):
            raise InvalidInput(f"account {login!r} has no mail in the queue and is not held")
        done = f"released {await queue.release_account(login)} message(s) of {login}"
    elif verb == "retry":
        done = f"{await queue.retry_account(login)} message(s) of {login} due now"
    else:
        done = f"deleted {await queue.delete_account(login)} message(s) of {login}"
    await services.audit.append(actor=who.actor, action=f"queue-{verb}-account", account=login)
    return done


async def suspend(
    services: WebServices, who: Principal, login: str, kind: str, reason: str
) -> Suspension:
    """As `relay suspension add LOGIN --reason R --kind K` (audited by the service)."""
    if kind not in ("admin", "abuse", "reputation"):
        raise InvalidInput(f"kind must be admin, abuse or reputation, not {kind!r}")
    await services.accounts.require(login)
    return await services.suspensions.suspend(
        login, Kind(kind), _reason(reason), {"by_hand": True}, actor=who.actor
    )


def _address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise InvalidInput(f"not an IP address: {text!r}") from None


async def disable_ip(services: WebServices, who: Principal, ip: str, reason: str) -> str:
    """As `relay ip disable IP --reason R`: only an IP of the pool, with a reason."""
    ip = _address(ip)
    if ip not in {e.ip for e in services.settings.delivery.egress}:
        raise InvalidInput(f"{ip} is not in the egress pool (delivery.egress)")
    reason = _reason(reason)
    await services.egress.disable(ip, reason)
    await services.audit.append(actor=who.actor, action="ip-disable", subject=ip, reason=reason)
    return f"disabled {ip}: {reason}"


async def enable_ip(services: WebServices, who: Principal, ip: str) -> str:
    ip = _address(ip)
    was_disabled = await services.egress.enable(ip)
    await services.audit.append(actor=who.actor, action="ip-enable", subject=ip)
    return f"enabled {ip}" if was_disabled else f"{ip} was not disabled; its cool-downs ended"


async def add_plan(
    services: WebServices,
    who: Principal,
    login: str,
    daily: int,
    per_minute: int | None = None,
    starts: float | None = None,
    expires: float | None = None,
) -> Plan:
    """As `relay plan add`: it applies at once (plans add up)."""
    await services.accounts.require(login)
    try:
        plan = Plan(
            new_plan_id(), daily=daily, per_minute=per_minute, starts=starts, expires=expires
        )
    except InvalidValue as exc:
        raise InvalidInput(str(exc)) from None
    await services.quota.add_plan(login, plan)
    evidence = {"daily": daily, "per_minute": per_minute, "starts": starts, "expires": expires}
    await services.audit.append(
        actor=who.actor, action="plan-add", account=login, subject=plan.id, evidence=evidence
    )
    return plan


async def remove_plan(services: WebServices, who: Principal, login: str, plan_id: str) -> None:
    await services.accounts.require(login)
    try:
        await services.quota.remove_plan(login, plan_id)
    except InvalidValue as exc:
        raise NotFound(str(exc)) from None
    await services.audit.append(
        actor=who.actor, action="plan-remove", account=login, subject=plan_id
    )


_CSV_FIELDS = ("at", "actor", "action", "account", "subject", "reason", "evidence")


def audit_csv(entries: Iterable[AuditEntry]) -> str:
    """The audit log as CSV (one row per entry, evidence as JSON). A cell starting with
    = + - @ gets a leading quote, so a spreadsheet never runs text from outside as a formula."""
    import json

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(_CSV_FIELDS)
    for e in entries:
        row: dict[str, Any] = e.as_dict()
        row["evidence"] = json.dumps(e.evidence, sort_keys=True, default=str)
        writer.writerow([_cell(row[name]) for name in _CSV_FIELDS])
    return out.getvalue()


def _cell(value: object) -> str:
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
