"""Allow and deny lists, global and per account: recipient address, recipient domain, sender.

  lists:global        hash: "KIND:VALUE" -> JSON entry (action, reason, actor, at)
  lists:acct:LOGIN    hash: the same, for one account
  lists:scopes        set: the scopes that have entries ("global", "acct:LOGIN")

A deny entry refuses at MAIL (sender) or RCPT (recipient, domain) with 550 5.7.1 and its
reason. An allow entry skips the spam quarantine (never the malware scan, never the spam
reject). An account's entries override the global ones (its exceptions); within one scope,
deny wins over allow. Which scopes have entries is cached per process (`refresh`), so the
common case, no list for this account, costs no Redis round trip per recipient.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis.asyncio as aioredis

from relay import replies
from relay.clock import Clock
from relay.errors import InvalidInput, StoreUnavailable
from relay.redis_client import store_errors, text, text_dict
from relay.safe_text import clean_line

__all__ = ["ListAction", "ListEntry", "ListKind", "ListStore", "decide", "keys_for"]

GLOBAL = ""
_SCOPES = "lists:scopes"


class ListKind(StrEnum):
    RECIPIENT = "recipient"
    DOMAIN = "domain"
    """The recipient's domain (subdomains are not included)."""
    SENDER = "sender"


class ListAction(StrEnum):
    ALLOW = "allow"
    DENY = "deny"


@dataclass(frozen=True)
class ListEntry:
    account: str
    """"" for a global entry."""
    kind: ListKind
    value: str
    action: ListAction
    reason: str = ""
    actor: str = ""
    at: float = 0.0

    @property
    def scope(self) -> str:
        return "global" if self.account == GLOBAL else f"account {self.account}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "kind": self.kind.value,
            "value": self.value,
            "action": self.action.value,
            "reason": self.reason,
            "actor": self.actor,
            "at": self.at,
        }


def normalize(kind: ListKind, value: str) -> str:
    """Addresses and domains compared without case (local parts too: lists are a policy
    tool, not a mailbox)."""
    value = value.strip().strip("<>").lower().rstrip(".")
    if kind is ListKind.DOMAIN:
        value = value.lstrip("@")
        if not value or "@" in value or " " in value:
            raise InvalidInput(f"not a domain: {value!r}")
    elif value.count("@") != 1 or value.startswith("@") or value.endswith("@") or " " in value:
        raise InvalidInput(f"not an address: {value!r}")
    return value


def keys_for(kind: ListKind, address: str) -> list[str]:
    """The hash fields that can match an address: a sender is matched by its address; a
    recipient by its address and its domain."""
    address = address.strip().lower()
    if kind is ListKind.SENDER:
        return [f"sender:{address}"]
    return [f"recipient:{address}", f"domain:{address.rpartition('@')[2].rstrip('.')}"]


def decide(global_hits: Iterable[ListEntry], account_hits: Iterable[ListEntry]) -> ListEntry | None:
    """The entry that decides: the account's over the global ones; in one scope, deny first."""
    for hits in (list(account_hits), list(global_hits)):
        if hits:
            denied = [e for e in hits if e.action is ListAction.DENY]
            return (denied or hits)[0]
    return None


def _scope_key(account: str) -> str:
    return "lists:global" if account == GLOBAL else f"lists:acct:{account}"


def _scope_name(account: str) -> str:
    return "global" if account == GLOBAL else f"acct:{account}"


def _entry(account: str, field: str, raw: str) -> ListEntry:
    kind, _, value = field.partition(":")
    data = json.loads(raw)
    return ListEntry(
        account=account,
        kind=ListKind(kind),
        value=value,
        action=ListAction(data["action"]),
        reason=data.get("reason", ""),
        actor=data.get("actor", ""),
        at=float(data.get("at", 0.0)),
    )


class ListStore:
    def __init__(
        self,
        redis: aioredis.Redis,
        clock: Clock,
        *,
        refresh: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._clock = clock
        self._refresh = refresh
        self._monotonic = monotonic
        self._scopes: set[str] = set()
        self._read_at: float | None = None

    # --- operators ---

    async def add(
        self,
        account: str,
        kind: ListKind,
        value: str,
        action: ListAction,
        reason: str,
        actor: str,
    ) -> ListEntry:
        entry = ListEntry(
            account=account,
            kind=kind,
            value=normalize(kind, value),
            action=action,
            reason=clean_line(reason)[:200],
            actor=actor,
            at=self._clock.now(),
        )
        data = {"action": action.value, "reason": entry.reason, "actor": actor, "at": entry.at}
        with store_errors():
            await self._redis.hset(
                _scope_key(account), f"{kind.value}:{entry.value}", json.dumps(data)
            )
            await self._redis.sadd(_SCOPES, _scope_name(account))
        self._read_at = None
        return entry

    async def remove(self, account: str, kind: ListKind, value: str) -> bool:
        key = _scope_key(account)
        with store_errors():
            removed = await self._redis.hdel(key, f"{kind.value}:{normalize(kind, value)}")
            if not await self._redis.exists(key):
                await self._redis.srem(_SCOPES, _scope_name(account))
        self._read_at = None
        return bool(removed)

    async def show(self, account: str | None = None) -> list[ListEntry]:
        """One scope's entries (GLOBAL or a login), or every scope's (None)."""
        with store_errors():
            if account is None:
                names = sorted(text(s) for s in await self._redis.smembers(_SCOPES))
                accounts = [GLOBAL if n == "global" else n.removeprefix("acct:") for n in names]
            else:
                accounts = [account]
            entries: list[ListEntry] = []
            for login in accounts:
                raw = text_dict(await self._redis.hgetall(_scope_key(login)))
                entries.extend(_entry(login, f, v) for f, v in sorted(raw.items()))
        return entries

    # --- the submission path ---

    async def _active(self, account: str) -> tuple[bool, bool]:
        """(global list has entries, the account's list has entries), cached `refresh`."""
        now = self._monotonic()
        if self._read_at is None or now - self._read_at >= self._refresh:
            with store_errors():
                self._scopes = {text(s) for s in await self._redis.smembers(_SCOPES)}
            self._read_at = now
        return "global" in self._scopes, _scope_name(account) in self._scopes

    async def lookup(self, account: str, kind: ListKind, address: str) -> ListEntry | None:
        """The deciding entry for this sender or recipient, or None (no entry matches)."""
        use_global, use_account = await self._active(account)
        if not (use_global or use_account):
            return None
        fields = keys_for(kind, address)
        scopes = [a for a, used in ((GLOBAL, use_global), (account, use_account)) if used]
        with store_errors():
            async with self._redis.pipeline(transaction=False) as pipe:
                for scope in scopes:
                    pipe.hmget(_scope_key(scope), fields)
                rows = await pipe.execute()
        hits: dict[str, list[ListEntry]] = {GLOBAL: [], account: []}
        for scope, values in zip(scopes, rows, strict=True):
            for field, raw in zip(fields, values, strict=True):
                if raw is not None:
                    hits[scope].append(_entry(scope, field, text(raw)))
        return decide(hits[GLOBAL], hits[account] if account != GLOBAL else [])

    async def sender_refusal(self, account: str, address: str) -> str | None:
        """550 5.7.1 with the reason for a denied sender, else None (a Redis failure lets
        mail through: lists are policy, not the quota)."""
        if not address or address == "<>":
            return None
        entry = await self._lookup_open(account, ListKind.SENDER, address)
        if entry is None or entry.action is not ListAction.DENY:
            return None
        return replies.DENIED_SENDER.format(
            address=address[:100], scope=entry.scope, reason=entry.reason or "listed"
        )

    async def recipient_refusal(self, account: str, address: str) -> str | None:
        entry = await self._lookup_open(account, ListKind.RECIPIENT, address)
        if entry is None or entry.action is not ListAction.DENY:
            return None
        return replies.DENIED_RECIPIENT.format(
            address=address[:100], scope=entry.scope, reason=entry.reason or "listed"
        )

    async def allowed(self, account: str, mail_from: str, recipients: Iterable[str]) -> bool:
        """Whether the sender, or every recipient, is allow-listed (skips the spam
        quarantine)."""
        if mail_from:
            entry = await self._lookup_open(account, ListKind.SENDER, mail_from)
            if entry is not None and entry.action is ListAction.ALLOW:
                return True
        recipients = list(recipients)
        for recipient in recipients:
            entry = await self._lookup_open(account, ListKind.RECIPIENT, recipient)
            if entry is None or entry.action is not ListAction.ALLOW:
                return False
        return bool(recipients)

    async def _lookup_open(self, account: str, kind: ListKind, address: str) -> ListEntry | None:
        try:
            return await self.lookup(account, kind, address)
        except StoreUnavailable:
            return None
