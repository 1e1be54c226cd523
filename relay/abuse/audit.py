"""The append-only audit log: every suspension change, automatic or manual, with its evidence.

A Redis stream (`audit`, and `audit:{LOGIN}` per account so one account's history is read
without scanning the rest). Entries are only ever added.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, TypedDict, Unpack

import redis.asyncio as aioredis
from redis.typing import EncodableT, FieldT

from relay.clock import Clock
from relay.redis_client import load_script, store_errors, text, text_dict
from relay.safe_text import clean_line, clean_tree

__all__ = ["AuditEntry", "AuditLog"]

_ALL = "audit"
_COPIED = "{audit}:copied"  # the tag is the whole name of `audit`: both in one slot
_COPIES_KEPT = 30 * 86400.0


def of_account(login: str) -> str:
    """The account's own stream (its hash tag: the account's slot)."""
    return _of_account(login)


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


class About(TypedDict, total=False):
    """What an entry is about, besides who did what."""

    account: str
    subject: str
    reason: str
    evidence: dict[str, Any] | None


class AuditLog:
    def __init__(self, redis: aioredis.Redis, clock: Clock) -> None:
        self._redis = redis
        self._clock = clock
        self._copy = load_script(redis, __file__, "audit_copy.lua")

    async def append(self, *, actor: str, action: str, **about: Unpack[About]) -> AuditEntry:
        """Append an entry; its text is cleaned (reasons and evidence come from outside, and
        a line break in a reason would forge a row of `relay audit`)."""
        entry, fields = self.prepare(actor=actor, action=action, **about)
        stream: dict[FieldT, EncodableT] = {k: v for k, v in fields.items()}
        with store_errors():
            await self._redis.xadd(_ALL, stream)
            if entry.account:
                await self._redis.xadd(_of_account(entry.account), stream)
        return entry

    def prepare(
        self,
        *,
        actor: str,
        action: str,
        account: str = "",
        subject: str = "",
        reason: str = "",
        evidence: dict[str, Any] | None = None,
    ) -> tuple[AuditEntry, dict[str, str]]:
        """The entry, cleaned, and the stream fields that record it (for a script that writes
        it together with the change it records)."""
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
        fields = {
            "at": repr(entry.at),
            "actor": actor,
            "action": action,
            "account": account,
            "subject": subject,
            "reason": reason,
            "evidence": json.dumps(entry.evidence, sort_keys=True, default=str),
        }
        return entry, fields

    async def copy_to_all(self, account: str, entry_id: str, fields: dict[str, str]) -> bool:
        """Copy the account's entry `entry_id` into the global stream, once: False when an
        earlier (interrupted) run copied it already."""
        now = self._clock.now()
        with store_errors():
            result = await self._copy(
                keys=[_ALL, _COPIED],
                args=[
                    f"{account}/{entry_id}",
                    repr(now),
                    repr(now - _COPIES_KEPT),
                    json.dumps(fields),
                ],
            )
        return text(result) == "copied"

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
