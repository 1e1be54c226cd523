"""The append-only audit log: every suspension change, automatic or manual, with its evidence.

A Redis stream (`audit`, and `audit:{LOGIN}` per account so one account's history is read
without scanning the rest). Entries are only ever added.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.typing import EncodableT, FieldT

from relay.clock import Clock
from relay.redis_client import store_errors, text_dict
from relay.safe_text import clean_line, clean_tree

__all__ = ["AuditEntry", "AuditLog"]

_ALL = "audit"


def _of_account(login: str) -> str:
    return f"audit:{{{login}}}"


@dataclass(frozen=True)
class AuditEntry:
    at: float
    actor: str
    """`system:monitor`, `system:data-check`, `operator:<name>`, `user:<login>`, …"""
    action: str
    account: str
    subject: str
    """What the action is about: a suspension id, an IP, a domain."""
    reason: str
    evidence: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "actor": self.actor,
            "action": self.action,
            "account": self.account,
            "subject": self.subject,
            "reason": self.reason,
            "evidence": self.evidence,
        }


class AuditLog:
    def __init__(self, redis: aioredis.Redis, clock: Clock) -> None:
        self._redis = redis
        self._clock = clock

    async def append(
        self,
        *,
        actor: str,
        action: str,
        account: str = "",
        subject: str = "",
        reason: str = "",
        evidence: dict[str, Any] | None = None,
    ) -> AuditEntry:
        """Append an entry; its text is cleaned (reasons and evidence come from outside, and
        a line break in a reason would forge a row of `relay audit`)."""
        actor, action, account = clean_line(actor), clean_line(action), clean_line(account)
        subject, reason = clean_line(subject), clean_line(reason)
        entry = AuditEntry(
            at=self._clock.now(),
            actor=actor,
            action=action,
            account=account,
            subject=subject,
            reason=reason,
            evidence=clean_tree(evidence or {}),
        )
        fields: dict[FieldT, EncodableT] = {
            "at": repr(entry.at),
            "actor": actor,
            "action": action,
            "account": account,
            "subject": subject,
            "reason": reason,
            "evidence": json.dumps(entry.evidence, sort_keys=True, default=str),
        }
        with store_errors():
            await self._redis.xadd(_ALL, fields)
            if account:
                await self._redis.xadd(_of_account(account), fields)
        return entry

    async def entries(self, *, account: str = "", limit: int = 100) -> list[AuditEntry]:
        """The newest `limit` entries (of one account, or all), oldest first."""
        stream = _of_account(account) if account else _ALL
        with store_errors():
            rows = await self._redis.xrevrange(stream, count=limit)
        out = []
        for _, raw in reversed(rows or []):
            fields = text_dict(raw or {})
            out.append(
                AuditEntry(
                    at=float(fields["at"]),
                    actor=fields["actor"],
                    action=fields["action"],
                    account=fields.get("account", ""),
                    subject=fields.get("subject", ""),
                    reason=fields.get("reason", ""),
                    evidence=json.loads(fields.get("evidence") or "{}"),
                )
            )
        return out
