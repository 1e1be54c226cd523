"""Webhooks of an account (URL, event kinds, secret), their progress and their delivery log.

Each webhook reads its account's event stream from its own cursor (the id of the last event
it is done with): the stream is its queue, so appending an event costs delivery nothing more,
and a webhook's events go out in stream order (hence in order per message). A failing
endpoint only holds back its own cursor.

Keys (the account's hash tag): `wh:{LOGIN}` (webhooks, id → JSON), `whs:{LOGIN}:ID`
(cursor and retry state), `whl:{LOGIN}:ID` (the last `LOG_SIZE` attempts); and one set
`webhooks` of every `LOGIN ID`, for the dispatcher to find them.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass

import redis.asyncio as aioredis

from relay.clock import Clock
from relay.errors import InvalidInput
from relay.events.errors import UnknownWebhook
from relay.events.model import KINDS
from relay.events.stream import EventStream
from relay.events.targets import check_target
from relay.redis_client import store_errors, text, text_dict

__all__ = ["Progress", "Webhook", "WebhookStore", "parse_kinds", "register"]

INDEX = "webhooks"
_LEASE = """
-- KEYS[1] the lease; ARGV[1] owner; ARGV[2] milliseconds (0: give it back if ours)
local holder = redis.call('GET', KEYS[1])
if ARGV[2] == '0' then
  if holder == ARGV[1] then redis.call('DEL', KEYS[1]) end
  return 0
end
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
LOG_SIZE = 200


def _hooks(login: str) -> str:
    return f"wh:{{{login}}}"


def _state(login: str, hook_id: str) -> str:
    return f"whs:{{{login}}}:{hook_id}"


def _log(login: str, hook_id: str) -> str:
    return f"whl:{{{login}}}:{hook_id}"


def _lease(login: str, hook_id: str) -> str:
    return f"whlease:{{{login}}}:{hook_id}"


@dataclass(frozen=True)
class Webhook:
    id: str
    account: str
    url: str
    kinds: tuple[str, ...]
    secret: str
    created_at: float

    def wants(self, kind: str) -> bool:
        return kind in self.kinds

    def as_dict(self) -> dict[str, object]:
        """Without the secret: it is shown once, at `add`."""
        return {
            "id": self.id,
            "account": self.account,
            "url": self.url,
            "kinds": list(self.kinds),
            "created_at": self.created_at,
        }


@dataclass(frozen=True)
class Progress:
    cursor: str = ""
    """Id of the last event this webhook is done with ("": none yet)."""
    failing_since: float | None = None
    """When the event at the cursor's next position first failed (None: not failing)."""
    attempts: int = 0
    next_at: float = 0.0
    """Not before this time (back-off after a failure)."""


class WebhookStore:
    def __init__(self, redis: aioredis.Redis, clock: Clock) -> None:
        self._redis = redis
        self._clock = clock
        self._renew = redis.register_script(_LEASE)

    async def add(self, account: str, url: str, kinds: tuple[str, ...], cursor: str) -> Webhook:
        """A new webhook, starting after event `cursor` (the newest at creation)."""
        hook = Webhook(
            id=secrets.token_hex(4),
            account=account,
            url=url,
            kinds=kinds,
            secret="whsec_" + secrets.token_urlsafe(32),
            created_at=self._clock.now(),
        )
        value = json.dumps(
            {"url": url, "kinds": list(kinds), "secret": hook.secret, "created_at": hook.created_at}
        )
        with store_errors():
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hset(_hooks(account), hook.id, value)
                pipe.hset(_state(account, hook.id), mapping={"cursor": cursor})
                pipe.sadd(INDEX, f"{account} {hook.id}")
                await pipe.execute()
        return hook

    async def remove(self, account: str, hook_id: str) -> None:
        with store_errors():
            removed = await self._redis.hdel(_hooks(account), hook_id)
            await self._redis.srem(INDEX, f"{account} {hook_id}")
            await self._redis.delete(_state(account, hook_id), _log(account, hook_id))
        if not removed:
            raise UnknownWebhook(f"no webhook {hook_id!r} for {account}")

    async def remove_all(self, account: str) -> int:
        """Forget every webhook of an account (it is removed)."""
        hooks = await self.of_account(account)
        for hook in hooks:
            await self.remove(account, hook.id)
        return len(hooks)

    async def of_account(self, account: str) -> list[Webhook]:
        with store_errors():
            found = await self._redis.hgetall(_hooks(account))
        hooks = [_parse(account, text(k), text(v)) for k, v in found.items()]
        return sorted(hooks, key=lambda h: h.created_at)

    async def get(self, account: str, hook_id: str) -> Webhook:
        with store_errors():
            found = await self._redis.hget(_hooks(account), hook_id)
        if found is None:
            raise UnknownWebhook(f"no webhook {hook_id!r} for {account}")
        return _parse(account, hook_id, text(found))

    async def everyone(self) -> list[tuple[str, str]]:
        """(account, webhook id) of every webhook."""
        with store_errors():
            members = await self._redis.smembers(INDEX)
        pairs = (text(m).partition(" ") for m in members)
        return sorted((account, hook_id) for account, _, hook_id in pairs)

    async def progress(self, hook: Webhook) -> Progress:
        with store_errors():
            fields = text_dict(await self._redis.hgetall(_state(hook.account, hook.id)))
        since = fields.get("failing_since", "")
        return Progress(
            cursor=fields.get("cursor", ""),
            failing_since=float(since) if since else None,
            attempts=int(fields.get("attempts", "0") or 0),
            next_at=float(fields.get("next_at", "0") or 0),
        )

    async def save(self, hook: Webhook, progress: Progress) -> None:
        with store_errors():
            await self._redis.hset(
                _state(hook.account, hook.id),
                mapping={
                    "cursor": progress.cursor,
                    "failing_since": ""
                    if progress.failing_since is None
                    else repr(progress.failing_since),
                    "attempts": progress.attempts,
                    "next_at": repr(progress.next_at),
                },
            )

    async def note(self, hook: Webhook, entry: dict[str, object]) -> None:
        """One attempt into the webhook's log (newest first, the last LOG_SIZE kept)."""
        with store_errors():
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.lpush(_log(hook.account, hook.id), json.dumps(entry))
                pipe.ltrim(_log(hook.account, hook.id), 0, LOG_SIZE - 1)
                await pipe.execute()

    async def log(self, account: str, hook_id: str, limit: int = 50) -> list[dict[str, object]]:
        with store_errors():
            found = await self._redis.lrange(_log(account, hook_id), 0, max(0, limit - 1))
        return [json.loads(text(x)) for x in found]

    async def lease(self, hook: Webhook, owner: str, seconds: float) -> bool:
        """Take or renew the webhook for `seconds`: only one dispatcher (of all processes)
        serves a webhook at a time, and a dead one's webhooks come back within `seconds`."""
        with store_errors():
            return bool(
                await self._renew(
                    keys=[_lease(hook.account, hook.id)], args=[owner, int(seconds * 1000)]
                )
            )

    async def unlease(self, hook: Webhook, owner: str) -> None:
        with store_errors():
            await self._renew(keys=[_lease(hook.account, hook.id)], args=[owner, 0])


def _parse(account: str, hook_id: str, stored: str) -> Webhook:
    data = json.loads(stored)
    return Webhook(
        id=hook_id,
        account=account,
        url=str(data["url"]),
        kinds=tuple(data["kinds"]),
        secret=str(data["secret"]),
        created_at=float(data["created_at"]),
    )


def parse_kinds(text: str) -> tuple[str, ...]:
    """`delivered,bounced` → its kinds; "" or `all` → every kind. Raises InvalidInput."""
    if text.strip() in ("", "all"):
        return KINDS
    kinds = tuple(dict.fromkeys(k.strip() for k in text.split(",") if k.strip()))
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise InvalidInput(f"unknown event kind {', '.join(unknown)!s}: use {', '.join(KINDS)}")
    return kinds


async def register(
    store: WebhookStore,
    stream: EventStream,
    account: str,
    url: str,
    kinds: tuple[str, ...],
    *,
    allow_private: bool,
) -> Webhook:
    """A new webhook after checking its target; it gets the events from now on."""
    await check_target(url, allow_private=allow_private)
    return await store.add(account, url.strip(), kinds, await stream.last_id(account))
