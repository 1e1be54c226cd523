"""Suspend, lift, deny: the rules of `reputation.suspension` applied to the relay's state.

A suspension refuses the account's RCPTs (the quota state in Redis, checked by the same Lua
call as the quota), holds its queued mail, is written to the audit log with its evidence, and
is mailed to the account's contact and to the operators. Each change is written whole by one
script in the account's slot, and what lives in other slots follows from its outbox
(relay/abuse/changes.py): a crash or a concurrent change never leaves half of one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Literal

import structlog

from quota import QuotaStore
from relay.abuse.audit import AuditLog
from relay.abuse.changes import AccountChanges, FollowUp, QuotaChange
from relay.abuse.notify import Notifier
from relay.abuse.store import Suspension, SuspensionStore
from relay.accounts import AccountStore
from relay.clock import Clock
from relay.errors import NotFound, StoreUnavailable
from relay.queue import QueueStore
from relay.safe_text import clean_line, clean_tree
from reputation import EscalationPolicy, Kind, Status, check_deny, check_lift, terms_for

__all__ = ["SuspensionService"]

log = structlog.get_logger("relay.abuse")

_DECISIONS = 20
"""Times a change is decided again when concurrent changes of the account keep coming first."""
_RUNNER_WAIT = 0.05
_RUNNER_TRIES = 200
"""How long a change waits (tries × wait) for another runner of the account's follow-ups."""


class SuspensionService:
    def __init__(
        self,
        *,
        store: SuspensionStore,
        audit: AuditLog,
        quota: QuotaStore,
        queue: QueueStore,
        accounts: AccountStore,
        notifier: Notifier,
        clock: Clock,
        policy: EscalationPolicy,
        changes: AccountChanges,
    ) -> None:
        self.store = store
        self._changes = changes
        self.audit = audit
        self._quota = quota
        self._queue = queue
        self._accounts = accounts
        self.notifier = notifier
        self._clock = clock
        self._policy = policy

    async def suspend(
        self, login: str, kind: Kind, reason: str, evidence: dict[str, Any], actor: str
    ) -> Suspension:
        """Suspend now. While an offence suspension is open, new evidence is added to the
        audit log against it instead of counting as one more offence. Reason and evidence
        often come from outside (a complaint, a DNS TXT record): stored cleaned."""
        reason, evidence = clean_line(reason), clean_tree(evidence)
        for _ in range(_DECISIONS):
            now = self._clock.now()
            history = await self.store.of_account(login)
            for open_one in (s for s in history if s.status is Status.OPEN):
                if open_one.kind.is_offence or open_one.kind is kind:
                    await self.audit.append(
                        actor=actor,
                        action="evidence",
                        account=login,
                        subject=open_one.id,
                        reason=reason,
                        evidence=evidence,
                    )
                    return open_one
            earlier = sum(1 for s in history if s.kind.is_offence)
            suspension = Suspension(
                id=self.store.new_id(),
                account=login,
                kind=kind,
                reason=reason,
                evidence=evidence,
                actor=actor,
                created_at=now,
                terms=terms_for(kind, earlier, now, self._policy),
            )
            entry = {**evidence, "offence": suspension.terms.offence}
            if await self._write(
                history, suspension, "suspend", kind.value, "hold", "suspended", reason, entry
            ):
                break
        else:
            raise _too_busy(login)
        log.warning(
            "account.suspended",
            account=login,
            kind=kind.value,
            reason=reason,
            suspension=suspension.id,
            offence=suspension.terms.offence,
            actor=actor,
        )
        await self.follow_up(login)
        return suspension

    async def lift(
        self, sid: str, *, actor: str, reason: str, by_operator: bool = True, force: bool = False
    ) -> Suspension:
        reason = clean_line(reason)
        account = (await self.store.get(sid)).account
        async for now, history, s in self._decisions(account, sid):
            check_lift(
                status=s.status, terms=s.terms, by_operator=by_operator, now=now, force=force
            )
            lifted = s.closed(Status.LIFTED, at=now, by=actor, reason=reason)
            still_open = [x.id for x in history if x.status is Status.OPEN and x.id != sid]
            denied = any(x.status is Status.DENIED for x in history)
            release = not still_open and not denied
            entry = {"forced": force, "released": release, "still_open": still_open}
            if await self._write(
                history,
                lifted,
                "lift" if release else "",
                "",
                "release" if release else "",
                "lifted",
                reason,
                entry,
            ):
                break
        log.info("account.lifted", account=account, suspension=sid, actor=actor, forced=force)
        await self.follow_up(account)
        return lifted

    async def deny(self, sid: str, *, actor: str, reason: str) -> Suspension:
        reason = clean_line(reason)
        account = (await self.store.get(sid)).account
        async for now, history, s in self._decisions(account, sid):
            check_deny(status=s.status, terms=s.terms)
            denied = s.closed(Status.DENIED, at=now, by=actor, reason=reason)
            why = f"{s.kind.value}, reinstatement refused"
            if await self._write(history, denied, "deny", why, "", "denied", reason, {}):
                break
        log.warning("account.denied", account=account, suspension=sid, actor=actor)
        await self.follow_up(account)
        return denied

    async def password_changed(self, login: str) -> list[Suspension]:
        """Contract 004: a first block is lifted by the user changing the password."""
        lifted = []
        for s in await self.store.of_account(login):
            if s.status is Status.OPEN and s.terms.user_may_lift:
                lifted.append(
                    await self.lift(
                        s.id, actor=f"user:{login}", reason="password changed", by_operator=False
                    )
                )
        return lifted

    async def _decisions(
        self, account: str, sid: str
    ) -> AsyncIterator[tuple[float, list[Suspension], Suspension]]:
        """(now, the account's suspensions, the one `sid`) to decide on, read again each time
        the caller's write found that another change came first; StoreUnavailable past
        `_DECISIONS` of them."""
        for _ in range(_DECISIONS):
            history = await self.store.of_account(account)
            yield self._clock.now(), history, _find(history, sid)
        raise _too_busy(account)

    async def replay(self) -> int:
        """Finish the follow-ups that a crash left undone (at start); the accounts seen."""
        accounts = await self._changes.pending()
        for login in accounts:
            await self.follow_up(login)
        return len(accounts)

    async def follow_up(self, login: str) -> None:
        """Run the account's outstanding follow-ups, oldest first (one runner at a time: when
        another has them, wait for it, since it may have missed the newest)."""
        for _ in range(_RUNNER_TRIES):
            token = await self._changes.take(login)
            if token is None:
                await asyncio.sleep(_RUNNER_WAIT)
                continue
            try:
                while (task := await self._changes.next(login)) is not None:
                    raw, step = task
                    await self._run(step)
                    await self._changes.done(login, raw)
            finally:
                await self._changes.release(login, token)
            if await self._changes.next(login) is None:
                return
        log.warning("suspension.follow_up_deferred", account=login)

    async def _run(self, step: FollowUp) -> None:
        s = await self.store.of_account_by_id(step.account, step.suspension)
        await self.store.index(s)
        if step.queue == "hold":
            held = await self._queue.hold_account(step.account)
            log.info("account.mail_held", account=step.account, messages=held)
        elif step.queue == "release":
            released = await self._queue.release_account(step.account)
            log.info("account.mail_released", account=step.account, messages=released)
        await self.audit.copy_to_all(step.account, step.audit_id, step.audit)
        contact = await self._contact(step.account)
        if step.notify == "suspended":
            await self.notifier.suspended(s, contact, step.at)
        elif step.notify == "lifted":
            await self.notifier.lifted(s, contact, step.at)
        else:
            await self.notifier.denied(s, contact, step.at)

    async def _write(
        self,
        history: list[Suspension],
        record: Suspension,
        quota: QuotaChange,
        quota_reason: str,
        queue: Literal["hold", "release", ""],
        notify: Literal["suspended", "lifted", "denied"],
        reason: str,
        evidence: dict[str, Any],
    ) -> bool:
        action = {"suspended": "suspend", "lifted": "lift", "denied": "deny"}[notify]
        actor = record.closed_by or record.actor
        _, fields = self.audit.prepare(
            actor=actor,
            action=action,
            account=record.account,
            subject=record.id,
            reason=reason,
            evidence=evidence,
        )
        step = FollowUp(
            account=record.account,
            suspension=record.id,
            queue=queue,
            notify=notify,
            at=self._clock.now(),
            audit=fields,
        )
        return await self._changes.write(
            history, record, quota=quota, quota_reason=quota_reason, follow_up=step
        )

    async def _contact(self, login: str) -> str:
        account = await self._accounts.get(login)
        return account.email if account else ""


def _find(history: list[Suspension], sid: str) -> Suspension:
    for s in history:
        if s.id == sid:
            return s
    raise NotFound(f"no suspension {sid!r}")


def _too_busy(login: str) -> StoreUnavailable:
    return StoreUnavailable(f"suspensions of {login} keep changing: try again")
