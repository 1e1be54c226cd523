"""Quarantined messages: metadata in Redis, bodies in the spool of the node that took them.

  quar:item:ID        hash: the record (`Quarantined`), plus `releasing` while a release runs
  quar:all            zset: ID -> created_at (listings, reports)
  quar:acct:LOGIN     zset: ID -> created_at (the account's quarantine, its digest)
  quar:expiry:NODE    zset: ID -> expires_at (the sweep of the node holding the body; also
                      what `relay spool check` is told is not an orphan)

The body stays the spool file it was received into, renamed to the quarantine id (one rename,
no copy of a 20 MB message): a release queues that very file, as acceptance would have.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from relay.clock import Clock
from relay.content.errors import ContentError, NotInQuarantine, ReleaseRefused
from relay.private_files import make_private_dirs
from relay.redis_client import store_errors, text, text_dict
from relay.safe_text import clean_line
from relay.spool import Spool, SpoolError

__all__ = ["Held", "QuarantineStore", "Quarantined", "subject_of"]

_ALL = "quar:all"


def _item(qid: str) -> str:
    return f"quar:item:{qid}"


def _of_account(login: str) -> str:
    return f"quar:acct:{login}"


def _expiry(node: str) -> str:
    return f"quar:expiry:{node}"


class Held(StrEnum):
    """Why a message is in quarantine (each kind has its retention)."""

    MALWARE = "malware"
    SPAM = "spam"


@dataclass(frozen=True)
class Quarantined:
    id: str
    kind: Held
    account: str
    mail_from: str
    recipients: tuple[str, ...]
    reason: str
    """The signature (malware) or the score (spam)."""
    subject: str
    size: int
    """Bytes of the body file (the header lines added at acceptance not counted)."""
    created_at: float
    expires_at: float
    node: str
    """Whose spool holds the body: only that node can release or delete it."""
    prefix: bytes = b""
    """The header lines acceptance put in front of the body (Received, DKIM-Signature…)."""
    dsn: str = ""
    sender_verified: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind.value,
            "account": self.account,
            "mail_from": self.mail_from,
            "recipients": list(self.recipients),
            "reason": self.reason,
            "subject": self.subject,
            "size": self.size,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "node": self.node,
        }


def subject_of(head: bytes) -> str:
    """The Subject of a header section, unfolded, one clean line (for listings and digests;
    encoded words are left as they are)."""
    lines = head.decode("utf-8", "replace").replace("\r\n", "\n").split("\n")
    found: list[str] = []
    for line in lines:
        if found and line[:1] in (" ", "\t"):
            found.append(line.strip())
        elif found:
            break
        elif line.lower().startswith("subject:"):
            found.append(line.partition(":")[2].strip())
    return clean_line(" ".join(found))[:200]


def _from_fields(raw: dict[bytes | str, bytes | str]) -> Quarantined:
    prefix = raw.pop(b"prefix", b"")
    if isinstance(prefix, str):
        prefix = prefix.encode()
    f = text_dict(raw)
    return Quarantined(
        id=f["id"],
        kind=Held(f["kind"]),
        account=f["account"],
        mail_from=f["mail_from"],
        recipients=tuple(json.loads(f["recipients"])),
        reason=f["reason"],
        subject=f.get("subject", ""),
        size=int(f["size"]),
        created_at=float(f["created_at"]),
        expires_at=float(f["expires_at"]),
        node=f["node"],
        prefix=prefix,
        dsn=f.get("dsn", ""),
        sender_verified=f.get("sender_verified") == "1",
    )


class QuarantineStore:
    def __init__(
        self,
        redis: aioredis.Redis,
        spool: Spool,
        clock: Clock,
        node: str,
        retention: dict[Held, float],
    ) -> None:
        self._redis = redis
        self.spool = spool
        self._clock = clock
        self.node = node
        self._retention = retention

    def new_id(self) -> str:
        """The queue's id format (time-ordered): a release queues the message under it."""
        return f"{int(self._clock.now() * 1000):011x}{secrets.token_hex(4)}"

    async def hold(
        self,
        kind: Held,
        *,
        body_id: str,
        size: int,
        head: bytes,
        account: str,
        mail_from: str,
        recipients: tuple[str, ...],
        reason: str,
        prefix: bytes = b"",
        dsn: str = "",
        sender_verified: bool = False,
    ) -> Quarantined:
        """Move the received body `body_id` into the quarantine; durable when it returns."""
        now = self._clock.now()
        record = Quarantined(
            id=self.new_id(),
            kind=kind,
            account=account,
            mail_from=mail_from,
            recipients=recipients,
            reason=clean_line(reason)[:300],
            subject=subject_of(head),
            size=size,
            created_at=now,
            expires_at=now + self._retention[kind],
            node=self.node,
            prefix=prefix,
            dsn=dsn,
            sender_verified=sender_verified,
        )
        source, target = self.spool.path(body_id), self.spool.path(record.id)
        try:
            await asyncio.to_thread(_move, source, target)
        except OSError as exc:
            raise SpoolError(f"cannot move {body_id} into the quarantine: {exc}") from None
        fields: dict[str, str | bytes] = {
            "id": record.id,
            "kind": kind.value,
            "account": account,
            "mail_from": mail_from,
            "recipients": json.dumps(list(recipients)),
            "reason": record.reason,
            "subject": record.subject,
            "size": str(size),
            "created_at": repr(now),
            "expires_at": repr(record.expires_at),
            "node": self.node,
            "prefix": prefix,
            "dsn": dsn,
            "sender_verified": "1" if sender_verified else "0",
        }
        try:
            with store_errors():
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.hset(_item(record.id), mapping=fields)  # type: ignore[arg-type]
                    pipe.zadd(_ALL, {record.id: now})
                    pipe.zadd(_of_account(account), {record.id: now})
                    pipe.zadd(_expiry(self.node), {record.id: record.expires_at})
                    await pipe.execute()
        except BaseException:
            self.spool.remove(record.id)
            raise
        return record

    async def get(self, qid: str) -> Quarantined:
        with store_errors():
            raw = await self._redis.hgetall(_item(qid))
        if not raw or b"id" not in raw:
            raise NotInQuarantine(f"no quarantined message {qid!r}")
        return _from_fields(raw)

    async def listing(
        self, *, account: str = "", kind: Held | None = None, limit: int = 1000
    ) -> list[Quarantined]:
        """Newest first."""
        index = _of_account(account) if account else _ALL
        with store_errors():
            ids = [text(i) for i in await self._redis.zrevrange(index, 0, limit - 1)]
            async with self._redis.pipeline(transaction=False) as pipe:
                for qid in ids:
                    pipe.hgetall(_item(qid))
                rows = await pipe.execute()
        found = [_from_fields(raw) for raw in rows if raw and b"id" in raw]
        return [q for q in found if kind is None or q.kind is kind]

    async def accounts(self) -> list[str]:
        """Logins with anything in quarantine (for the digests)."""
        with store_errors():
            keys = [text(k) async for k in self._redis.scan_iter(match="quar:acct:*", count=500)]
        return sorted(k.removeprefix("quar:acct:") for k in keys)

    async def on_node(self) -> set[str]:
        """Ids whose body is in this node's spool (not orphans for `relay spool check`)."""
        with store_errors():
            return {text(i) for i in await self._redis.zrange(_expiry(self.node), 0, -1)}

    async def expired(self, now: float) -> list[str]:
        with store_errors():
            found = await self._redis.zrangebyscore(_expiry(self.node), "-inf", now)
        return [text(i) for i in found]

    async def claim(self, qid: str) -> Quarantined:
        """Mark a record as being released: only one release of a message gets it."""
        record = await self.get(qid)
        if record.node != self.node:
            raise ReleaseRefused(
                f"{qid}: its body is on node {record.node}; run this there (this is {self.node})"
            )
        with store_errors():
            first = await self._redis.hsetnx(_item(qid), "releasing", repr(self._clock.now()))
            if first and not await self._redis.hexists(_item(qid), "id"):
                # Released (and forgotten) since `get`: the mark made a record of its own.
                await self._redis.delete(_item(qid))
                raise NotInQuarantine(f"no quarantined message {qid!r}")
        if not first:
            raise ReleaseRefused(f"{qid} is already being released")
        return record

    async def unclaim(self, qid: str) -> None:
        with store_errors():
            await self._redis.hdel(_item(qid), "releasing")

    async def forget(self, record: Quarantined) -> None:
        """Remove the record and its index entries (the body is left: released, it belongs
        to the queue now)."""
        with store_errors():
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.delete(_item(record.id))
                pipe.zrem(_ALL, record.id)
                pipe.zrem(_of_account(record.account), record.id)
                pipe.zrem(_expiry(record.node), record.id)
                await pipe.execute()

    async def delete(self, qid: str) -> Quarantined:
        """Remove the message for good: body, then record."""
        record = await self.get(qid)
        if record.node != self.node:
            raise ContentError(
                f"{qid}: its body is on node {record.node}; run this there (this is {self.node})"
            )
        self.spool.remove(qid)
        await self.forget(record)
        return record


def _move(source: Path, target: Path) -> None:
    """Rename within the spool and make both folders durable."""
    make_private_dirs(target.parent)
    os.rename(source, target)
    for folder in {source.parent, target.parent}:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
