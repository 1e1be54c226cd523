"""Quarantined mail and allow/deny lists from the browser or the API: the same service calls
as `relay quarantine|list` (relay/cli/content.py), for a customer on their own account or an
admin on any, each written to the audit log with who did it.

A customer may deliver or delete their own suspected spam; mail with malware stays one year
as evidence whatever they ask (the desk refuses it: `KeptAsEvidence`, answered 403). A
customer keeps their own lists; the global list is the operators'.
"""

from __future__ import annotations

from typing import Literal

from relay.content.lists import GLOBAL, ListAction, ListEntry, ListKind
from relay.content.quarantine import Quarantined
from relay.errors import NotFound
from relay.web.auth import Principal
from relay.web.errors import NotFoundError
from relay.web.services import WebServices

__all__ = [
    "ActionName",
    "KindName",
    "add_entry",
    "delete_held",
    "held_for",
    "release_held",
    "remove_entry",
]

KindName = Literal["recipient", "domain", "sender"]
"""A list entry's kind (`ListKind`) as the API and the forms take it."""
ActionName = Literal["allow", "deny"]


async def held_for(services: WebServices, who: Principal, qid: str) -> Quarantined:
    """The record, if `who` may see it (another account's is 404, as a missing one)."""
    record = await services.quarantine.store.get(qid)
    if who.kind == "customer" and record.account != who.name:
        raise NotFoundError(f"no quarantined message {qid!r}")
    return record


async def release_held(services: WebServices, who: Principal, qid: str) -> str:
    """Deliver it through the queue, on the account's quota (audited by the desk)."""
    await held_for(services, who, qid)
    queue_id = await services.quarantine.release(
        qid, actor=who.actor, operator=who.kind == "operator"
    )
    return f"{qid} released: queued as {queue_id}"


async def delete_held(services: WebServices, who: Principal, qid: str) -> str:
    await held_for(services, who, qid)
    await services.quarantine.delete(qid, actor=who.actor, operator=who.kind == "operator")
    return f"{qid} deleted"


async def add_entry(
    services: WebServices,
    who: Principal,
    account: str,
    kind: str,
    action: str,
    value: str,
    reason: str,
) -> ListEntry:
    """Into `account`'s list (GLOBAL: the operators' list for every account)."""
    if account != GLOBAL:
        await services.accounts.require(account)
    entry = await services.lists.add(
        account, ListKind(kind), value, ListAction(action), reason, who.actor
    )
    await services.audit.append(
        actor=who.actor,
        action="list-add",
        account=account,
        subject=f"{entry.action.value} {entry.kind.value} {entry.value}",
        reason=entry.reason,
    )
    return entry


async def remove_entry(
    services: WebServices, who: Principal, account: str, kind: str, value: str
) -> str:
    if account != GLOBAL:
        await services.accounts.require(account)
    if not await services.lists.remove(account, ListKind(kind), value):
        scope = "the global list" if account == GLOBAL else f"{account}'s list"
        raise NotFound(f"no {kind} entry {value!r} in {scope}")
    await services.audit.append(
        actor=who.actor, action="list-remove", account=account, subject=f"{kind} {value}"
    )
    return f"removed {kind} {value}"
