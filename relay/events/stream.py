"""Each account's events in one Redis Stream, plus each message's events in a list.

Why a stream per account: `GET /v1/events?since=` and the webhook dispatcher read an
account's events in order from a cursor (the stream id), and the stream trims itself by age
at each append (exact `MINID`, `events.retention`), so retention costs no sweeper. The ids
come from the relay's clock (`ms-seq`, never going back), so a cursor is also a time. The
per-message list answers `GET /v1/messages/{id}` without scanning the stream. One script call
appends to both (one round trip; the keys share the account's hash tag for Redis Cluster).
"""

from __future__ import annotations

import json
import re

import redis.asyncio as aioredis
import structlog
from redis.typing import EncodableT

from relay.clock import Clock
from relay.errors import InvalidInput
from relay.events.model import Event, EventDraft
from relay.redis_client import Along, load_script, stage_script, store_errors, text

__all__ = ["EventStream", "stream_key"]

log = structlog.get_logger("relay.events")

MAX_PAGE = 1000
_EVENT_ID = re.compile(r"\d{1,20}-\d{1,20}")


def stream_key(account: str) -> str:
    return f"ev:{{{account}}}"


def _message_key(account: str, message_id: str) -> str:
    return f"evm:{{{account}}}:{message_id}"


class EventStream:
    def __init__(self, redis: aioredis.Redis, clock: Clock, *, retention: float) -> None:
        self._redis = redis
        self._clock = clock
        self._retention_ms = int(retention * 1000)
        self._append = load_script(redis, __file__, "append.lua")

    async def append(self, account: str, draft: EventDraft) -> str:
        """Store one event; its id. Raises StoreUnavailable."""
        return (await self.append_many(account, [draft]))[0]

    async def append_many(self, account: str, drafts: list[EventDraft]) -> list[str]:
        """Store events in order, one round trip per message they are about; their ids."""
        ids: list[str] = []
        for _, group in _by_message(drafts):
            keys, args = self._append_call(account, group)
            with store_errors():
                found = await self._append(keys=keys, args=args)
            ids += [text(i) for i in found]
        return ids

    def along(self, account: str, drafts: list[EventDraft]) -> Along:
        """`record`, riding in another store's round trip (the enqueue of a message: its
        `accepted` events cost no round trip of their own). Drafts of one message."""
        assert len({d.message_id for d in drafts}) == 1, "one message's events"
        keys, args = self._append_call(account, drafts)
        return Along(
            "events.append_failed",
            lambda pipe: stage_script(pipe, self._append, keys, args),
            {"account": account, "message_id": drafts[0].message_id},
            again=lambda: self.record(account, drafts),
        )

    def _append_call(
        self, account: str, drafts: list[EventDraft]
    ) -> tuple[list[str], list[EncodableT]]:
        """`append.lua`'s keys and arguments for the events of one message."""
        keys = [stream_key(account), _message_key(account, drafts[0].message_id)]
        args: list[EncodableT] = [
            int(self._clock.now() * 1000),
            self._retention_ms,
            *(d.to_json() for d in drafts),
        ]
        return keys, args

    async def record(self, account: str, drafts: list[EventDraft]) -> None:
        """`append_many` for the paths that must never fail because of events (delivery,
        submission): a Redis failure is logged and the events are lost."""
        if not drafts:
            return
        try:
            await self.append_many(account, drafts)
        except Exception as exc:  # events are advice for the application: never fail the caller
            log.error(
                "events.append_failed",
                account=account,
                kinds=sorted({d.kind for d in drafts}),
                message_id=drafts[0].message_id,
                error=str(exc),
            )

    async def since(self, account: str, cursor: str = "", limit: int = 100) -> list[Event]:
        """Events after `cursor` (an event id; "" from the oldest kept), oldest first."""
        if cursor and not _EVENT_ID.fullmatch(cursor):
            raise InvalidInput(f"not an event id: {cursor[:60]!r} (they look like 1767225600000-0)")
        start = f"({cursor}" if cursor else "-"
        with store_errors():
            found = await self._redis.xrange(
                stream_key(account), min=start, max="+", count=max(1, min(limit, MAX_PAGE))
            )
        events = []
        for eid, fields in found or []:
            assert fields is not None
            events.append(Event.parse(text(eid), account, text(fields[b"e"])))
        return events

    async def last_id(self, account: str) -> str:
        """The id of the newest event ("" when none): where a new webhook starts reading."""
        with store_errors():
            found = await self._redis.xrevrange(stream_key(account), count=1)
        return text(found[0][0]) if found else ""

    async def of_message(self, account: str, message_id: str) -> list[Event]:
        """The events of one of the account's messages, oldest first ([] when none is kept:
        unknown, another account's, or older than the retention)."""
        with store_errors():
            found = await self._redis.lrange(_message_key(account, message_id), 0, -1)
        events = []
        for raw in found:
            stored = text(raw)
            events.append(Event.parse(str(json.loads(stored)["id"]), account, stored))
        return events


def _by_message(drafts: list[EventDraft]) -> list[tuple[str, list[EventDraft]]]:
    """Consecutive drafts about the same message, grouped (order kept)."""
    groups: list[tuple[str, list[EventDraft]]] = []
    for draft in drafts:
        if groups and groups[-1][0] == draft.message_id:
            groups[-1][1].append(draft)
        else:
            groups.append((draft.message_id, [draft]))
    return groups
