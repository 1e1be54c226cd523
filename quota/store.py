"""The limits of every credential in Redis: one Lua call per RCPT, Cluster-safe.

Keys of one credential share the hash tag `{owner}` (the same tag as the relay's account
hash), so every script touches one slot:
  quota:{owner}:day     1-minute buckets of the rolling 24 h (at most 1,441 fields)
  quota:{owner}:min     1-second buckets of the rolling minute (at most 61 fields)
  quota:{owner}:plans   plan id -> JSON
  quota:{owner}:state   suspended -> reason, permanent -> 1
  quota:{owner}:res:TX  what transaction TX reserved (expires: crash garbage collection)
  quota:{owner}:r:MINUTE:HASH  messages to one recipient this minute
"""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from quota.decision import Decision, Verdict
from quota.errors import InvalidValue, QuotaUnavailable
from quota.plans import Plan
from quota.reference import recipient_slot
from quota.usage import Usage, compute_usage

__all__ = ["QuotaStore"]

_SCRIPT = (Path(__file__).parent / "limits.lua").read_text(encoding="utf-8")
_GC_MS = 2 * 3600 * 1000
"""Reservation records outlive any transaction; only a crashed relay leaves one behind."""


class _Keys:
    def __init__(self, owner: str) -> None:
        tag = f"quota:{{{owner}}}"
        self.day, self.minute = f"{tag}:day", f"{tag}:min"
        self.plans, self.state = f"{tag}:plans", f"{tag}:state"
        self._tag = tag

    @property
    def fixed(self) -> list[str]:
        return [self.day, self.minute, self.plans, self.state]

    def reservation(self, tx: str) -> str:
        return f"{self._tag}:res:{tx}"

    def recipient(self, address: str, minute: int) -> str:
        digest = hashlib.sha1(address.encode(), usedforsecurity=False).hexdigest()[:16]
        return f"{self._tag}:r:{minute}:{digest}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class QuotaStore:
    def __init__(
        self, redis: aioredis.Redis, *, default_per_minute: int, per_recipient: int
    ) -> None:
        if default_per_minute <= 0 or per_recipient <= 0:
            raise InvalidValue("rate limits must be positive")
        self._redis = redis
        self._script = redis.register_script(_SCRIPT)
        self.default_per_minute = default_per_minute
        self.per_recipient = per_recipient

    async def _call(self, keys: list[str], args: list[Any]) -> Any:
        try:
            return await self._script(keys=keys, args=args)
        except RedisError as exc:
            raise QuotaUnavailable(f"redis: {exc}") from None

    async def reserve(
        self,
        owner: str,
        tx: str,
        recipient: str,
        now: float,
        units: int = 1,
        blocked: tuple[str, str] | None = None,
    ) -> Decision:
        """`blocked`: (hash key, field) of a list of recipients the owner may not send to,
        looked up in the same step (its key must share the owner's hash tag): a listed
        recipient is BLOCKED, with the list's entry as the reason, and nothing is reserved.
        (A lookup, not quota maths: the reference model has no such list.)"""
        now_ms = round(now * 1000)
        k = _Keys(owner)
        keys = [*k.fixed, k.reservation(tx), k.recipient(*recipient_slot(recipient, now_ms))]
        args: list[Any] = [
            "reserve",
            now_ms,
            units,
            self.default_per_minute,
            self.per_recipient,
            _GC_MS,
        ]
        if blocked is not None:
            keys.append(blocked[0])
            args.append(blocked[1])
        reply = await self._call(keys, args)
        verdict = Verdict(int(reply[0]))
        if verdict is Verdict.BLOCKED:
            return Decision(verdict, reason=_text(reply[1]))
        if verdict is Verdict.ALLOWED:
            return Decision(verdict, limit=int(reply[2]), used=int(reply[1]))
        if verdict is Verdict.EXPIRED:
            return Decision(verdict)
        if verdict is Verdict.SUSPENDED:
            return Decision(verdict, reason=_text(reply[1]), permanent=bool(int(reply[2])))
        retry_ms = int(reply[1])
        return Decision(
            verdict, limit=int(reply[2]), retry_at=retry_ms / 1000 if retry_ms >= 0 else None
        )

    async def commit(self, owner: str, tx: str) -> None:
        """The transaction was accepted: its reserved units stay counted."""
        try:
            await self._redis.delete(_Keys(owner).reservation(tx))
        except RedisError as exc:
            raise QuotaUnavailable(f"redis: {exc}") from None

    @staticmethod
    def stage_commit(pipe: Pipeline, owner: str, tx: str) -> None:
        """`commit`, added to another store's pipeline (the relay sends it with the
        enqueue of the message: one round trip for both)."""
        pipe.delete(_Keys(owner).reservation(tx))

    async def release(self, owner: str, tx: str, now: float) -> int:
        """The transaction did not complete: give its units back. Returns the 24 h units."""
        k = _Keys(owner)
        return int(await self._call([*k.fixed, k.reservation(tx)], ["release", round(now * 1000)]))

    @staticmethod
    def new_transaction() -> str:
        return secrets.token_hex(8)

    # --- plans ---

    async def add_plan(self, owner: str, plan: Plan) -> None:
        await self._write(lambda r: r.hset(_Keys(owner).plans, plan.id, plan.to_json()))

    async def remove_plan(self, owner: str, plan_id: str) -> None:
        removed = await self._write(lambda r: r.hdel(_Keys(owner).plans, plan_id))
        if not removed:
            raise InvalidValue(f"no plan {plan_id!r} for {owner!r}")

    async def plans(self, owner: str) -> list[Plan]:
        raw = await self._write(lambda r: r.hgetall(_Keys(owner).plans))
        return sorted(
            (Plan.from_json(_text(k), _text(v)) for k, v in raw.items()),
            key=lambda p: (p.starts or 0, p.id),
        )

    async def forget(self, owner: str) -> None:
        """Drop every limit and counter of a credential (its account was removed)."""
        await self._write(lambda r: r.delete(*_Keys(owner).fixed))

    # --- suspension (the reputation rules decide; this only records the state) ---

    @staticmethod
    def state_key(owner: str) -> str:
        """Where the suspension state lives, for a caller's script that writes it together
        with its own keys of the same hash tag (relay/abuse/change.lua)."""
        return _Keys(owner).state

    async def suspend(self, owner: str, reason: str, *, permanent: bool = False) -> None:
        state = _Keys(owner).state
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(state)
                pipe.hset(state, "suspended", reason)
                if permanent:
                    pipe.hset(state, "permanent", "1")
                await pipe.execute()
        except RedisError as exc:
            raise QuotaUnavailable(f"redis: {exc}") from None

    async def unsuspend(self, owner: str) -> None:
        await self._write(lambda r: r.delete(_Keys(owner).state))

    # --- visibility ---

    async def usage(self, owner: str, now: float) -> Usage:
        day, minute, plans, state = _Keys(owner).fixed
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hgetall(day)
                pipe.hgetall(minute)
                pipe.hgetall(plans)
                pipe.hget(state, "suspended")
                raw_day, raw_minute, raw_plans, suspended = await pipe.execute()
        except RedisError as exc:
            raise QuotaUnavailable(f"redis: {exc}") from None
        return compute_usage(
            day_buckets=_buckets(raw_day),
            minute_buckets=_buckets(raw_minute),
            plans=[Plan.from_json(_text(k), _text(v)) for k, v in raw_plans.items()],
            suspended=_text(suspended) if suspended else None,
            now=now,
            default_per_minute=self.default_per_minute,
        )

    async def _write(self, operation: Any) -> Any:
        try:
            return await operation(self._redis)
        except RedisError as exc:
            raise QuotaUnavailable(f"redis: {exc}") from None


def _buckets(raw: dict[Any, Any]) -> dict[int, int]:
    out = {}
    for key, value in raw.items():
        name = _text(key)
        if name.isdigit():
            out[int(name)] = int(value)
    return out
