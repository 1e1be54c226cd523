"""Suspend, lift, deny: the rules of `reputation.suspension` applied to the relay's state.

A suspension refuses the account's RCPTs (the quota state in Redis, checked by the same Lua
call as the quota), holds its queued mail, is written to the audit log with its evidence, and
is mailed to the account's contact and to the operators.
"""

from __future__ import annotations

from typing import Any

import structlog

from quota import QuotaStore
from relay.abuse.audit import AuditLog
from relay.abuse.notify import Notifier
from relay.abuse.store import Suspension, SuspensionStore
from relay.accounts import AccountStore
from relay.clock import Clock
from relay.queue import QueueStore
from relay.safe_text import clean_line, clean_tree
from reputation import EscalationPolicy, Kind, Status, check_deny, check_lift, terms_for

__all__ = ["SuspensionService"]

log = structlog.get_logger("relay.abuse")


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
    ) -> None:
        self.store = store
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
        await self.store.save(suspension)
        await self._quota.suspend(login, kind.value)
        held = await self._queue.hold_account(login)
        await self.audit.append(
            actor=actor,
            action="suspend",
            account=login,
            subject=suspension.id,
            reason=reason,
            evidence={**evidence, "offence": suspension.terms.offence, "held_messages": held},
        )
        log.warning(
            "account.suspended",
            account=login,
            kind=kind.value,
            reason=reason,
            suspension=suspension.id,
            offence=suspension.terms.offence,
            actor=actor,
        )
        await self.notifier.suspended(suspension, await self._contact(login), now)
        return suspension

    async def lift(
        self, sid: str, *, actor: str, reason: str, by_operator: bool = True, force: bool = False
    ) -> Suspension:
        now = self._clock.now()
        reason = clean_line(reason)
        s = await self.store.get(sid)
        check_lift(status=s.status, terms=s.terms, by_operator=by_operator, now=now, force=force)
        lifted = s.closed(Status.LIFTED, at=now, by=actor, reason=reason)
        await self.store.save(lifted)
        still_open = [x for x in await self.store.of_account(s.account) if x.status is Status.OPEN]
        released = 0
        if not still_open and not await self._denied(s.account):
            await self._quota.unsuspend(s.account)
            released = await self._queue.release_account(s.account)
        await self.audit.append(
            actor=actor,
            action="lift",
            account=s.account,
            subject=sid,
            reason=reason,
            evidence={
                "forced": force,
                "released_messages": released,
                "still_open": [x.id for x in still_open],
            },
        )
        log.info("account.lifted", account=s.account, suspension=sid, actor=actor, forced=force)
        await self.notifier.lifted(lifted, await self._contact(s.account), now)
        return lifted

    async def deny(self, sid: str, *, actor: str, reason: str) -> Suspension:
        now = self._clock.now()
        reason = clean_line(reason)
        s = await self.store.get(sid)
        check_deny(status=s.status, terms=s.terms)
        denied = s.closed(Status.DENIED, at=now, by=actor, reason=reason)
        await self.store.save(denied)
        await self._quota.suspend(
            s.account, f"{s.kind.value}, reinstatement refused", permanent=True
        )
        await self.audit.append(
            actor=actor, action="deny", account=s.account, subject=sid, reason=reason
        )
        log.warning("account.denied", account=s.account, suspension=sid, actor=actor)
        await self.notifier.denied(denied, await self._contact(s.account), now)
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

    async def _denied(self, login: str) -> bool:
        return any(s.status is Status.DENIED for s in await self.store.of_account(login))

    async def _contact(self, login: str) -> str:
        account = await self._accounts.get(login)
        return account.email if account else ""
