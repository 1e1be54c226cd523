"""The durable queue: metadata, jobs and leases in Redis, bodies in the node's spool.

A message's body is in the spool of the node that accepted it, so each node has its own
queue, under its own hash tag `{q:NODE}` (one Redis Cluster slot per node: every script
touches one slot, and the nodes of a fleet spread over the cluster's primaries):
  {q:NODE}:msg:ID          hash: envelope, account, the header lines added at acceptance
                           (`prefix`), jobs_left, hold and notice state; the body is the
                           spool file named by ID (relay/spool/)
  {q:NODE}:job:JID         hash: message, domain, pending recipients, attempts, lease token
  {q:NODE}:due             zset: job id -> due time (a claimed job's score is its lease end)
  {q:NODE}:held            zset: job id -> time held (held jobs are not in due)
  {q:NODE}:messages        zset: message id -> creation time (listing)
  {q:NODE}:acct:LOGIN      set: ids of the account's messages (hold and release by account)
  {q:NODE}:held_accounts   set: this node's copy of the held accounts (read by claim.lua)
  {q:NODE}:leased          set: jobs leased by the node's processes (taken back at once
                           when the node restarts after a crash)
And for the fleet:
  queue:nodes              set: the nodes that have a queue (operator actions find a
                           message, or an account's mail, on any of them)
  queue:held_accounts      set: logins whose mail is held, including mail queued later on
                           any node (each node keeps a copy under its own tag)

A lease token is "<node>:<pid>:<random>:<n>": whose lease it is, for that taking back.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from typing import Literal, cast

import redis.asyncio as aioredis
import structlog
from redis.typing import EncodableT, FieldT

from relay.address import domain_of
from relay.clock import Clock
from relay.config import Settings
from relay.errors import InvalidInput, NotFound, NotReplicated, StoreUnavailable
from relay.queue.model import (
    DsnRequest,
    Envelope,
    Job,
    LastError,
    QueuedMessage,
    split_by_domain,
)
from relay.redis_client import (
    Along,
    Wait,
    load_script,
    script_with,
    store_errors,
    text,
    text_dict,
)
from relay.spool import Spool, Spooled, SpoolError

__all__ = [
    "LEASE_LOST",
    "NOTICE_QUEUED",
    "Finished",
    "Notice",
    "QueueKeys",
    "QueueStore",
    "StoredMessage",
]

log = structlog.get_logger("relay.queue")


class Finished(Enum):
    """What `complete`/`reschedule` did (finish.lua answers these names)."""

    LEASE_LOST = "lease-lost"
    """Another worker owns the job now; nothing was changed."""
    DONE = "done"
    """Ended or rescheduled; no notice was queued (none given, or a delay notice already sent)."""
    NOTICE_QUEUED = "notice-queued"
    """Ended or rescheduled, and the notice given was queued in the same step."""


LEASE_LOST = Finished.LEASE_LOST
NOTICE_QUEUED = Finished.NOTICE_QUEUED


class _Held(Enum):
    """What hold.lua did."""

    NO_MESSAGE = "no-message"
    UNCHANGED = "unchanged"
    """Already held (hold) or not held (release)."""
    CHANGED = "changed"


_NODES = "queue:nodes"
_SINGLE = "{q}:"
"""The one queue of versions before fleets (adopted by the first node that starts)."""
_SINGLE_INDEXES = ("due", "held", "messages", "held_accounts")
_HELD_ACCOUNTS = "queue:held_accounts"
_LISTED = [
    "mail_from",
    "recipients",
    "account",
    "created_at",
    "size",
    "jobs_left",
    "held_at",
    "held_for",
    "delay_notified",
    "notice",
    "sender_verified",
]


@dataclass(frozen=True)
class QueueKeys:
    """The keys of one node's queue (all under its hash tag)."""

    node: str

    @property
    def tag(self) -> str:
        return f"{{q:{self.node}}}"

    @property
    def due(self) -> str:
        return f"{self.tag}:due"

    @property
    def held(self) -> str:
        return f"{self.tag}:held"

    @property
    def messages(self) -> str:
        return f"{self.tag}:messages"

    @property
    def held_accounts(self) -> str:
        return f"{self.tag}:held_accounts"

    @property
    def leased(self) -> str:
        return f"{self.tag}:leased"

    @property
    def job_prefix(self) -> str:
        return f"{self.tag}:job:"

    @property
    def msg_prefix(self) -> str:
        return f"{self.tag}:msg:"

    @property
    def acct_prefix(self) -> str:
        return f"{self.tag}:acct:"

    def msg(self, message_id: str) -> str:
        return self.msg_prefix + message_id

    def job(self, job_id: str) -> str:
        return self.job_prefix + job_id

    def account(self, login: str) -> str:
        return self.acct_prefix + login


@dataclass(frozen=True)
class StoredMessage:
    meta: QueuedMessage
    body: bytes
    """The message as delivered: the lines added at acceptance, then the spooled body."""


@dataclass(frozen=True)
class Notice:
    """A delivery status notification to queue with the end of an attempt (sender `<>`)."""

    id: str
    """Its queue id (from `QueueStore.new_id`), also in its Message-ID."""
    recipient: str
    account: str
    body: bytes
    kind: str
    """"failure", "delay" or "success": what the notice mainly reports (for listings)."""
    delay: Literal["plain", "delay", "with-delay"] = "plain"
    """How it relates to the message's one delay notice: see finish.lua."""


class QueueStore:
    """One node's queue (`node`: whose spool holds the bodies), and the operator actions
    that find a message or an account's mail on any node of the fleet."""

    def __init__(
        self,
        redis: aioredis.Redis,
        clock: Clock,
        spool: Spool,
        node: str | None = None,
        wait: Wait | None = None,
    ) -> None:
        self._redis = redis
        self._clock = clock
        self.spool = spool
        self.node = node or socket.gethostname()
        """Whose spool holds the bodies this store queues: `node.id` (`from_settings`); the
        host name when not given."""
        self.keys = QueueKeys(self.node)
        self._wait = wait
        """Replicas an enqueue must reach before it counts as done (`redis.wait_replicas`)."""
        self._registered = False
        self._enqueue = load_script(redis, __file__, "enqueue.lua")
        self._claim = load_script(redis, __file__, "claim.lua")
        self._finish = load_script(redis, __file__, "finish.lua")
        self._renew = load_script(redis, __file__, "renew.lua")
        self._reclaim = load_script(redis, __file__, "reclaim.lua")
        self._hold = load_script(redis, __file__, "hold.lua")
        self._remove = load_script(redis, __file__, "remove.lua")

    @classmethod
    def from_settings(cls, redis: aioredis.Redis, clock: Clock, settings: Settings) -> QueueStore:
        return cls(
            redis,
            clock,
            Spool(settings.spool.dir),
            node=settings.node.id,
            wait=Wait.from_settings(settings.redis),
        )

    def new_id(self) -> str:
        """Time-ordered and unique: 11 hex digits of milliseconds, 8 random."""
        return f"{int(self._clock.now() * 1000):011x}{secrets.token_hex(4)}"

    async def register(self) -> None:
        """Make this node's queue one of the fleet's, with a current copy of the held
        accounts (held or released while it was away); once per process, before its first
        enqueue or claim."""
        if self._registered:
            return
        with store_errors():
            await self._adopt_single_queue()
            await self._redis.sadd(_NODES, self.node)
            held = await self._redis.smembers(_HELD_ACCOUNTS)
            async with self._redis.pipeline(transaction=True) as pipe:  # one slot: the copy
                pipe.delete(self.keys.held_accounts)
                if held:
                    pipe.sadd(self.keys.held_accounts, *held)
                await pipe.execute()
        self._registered = True

    async def _adopt_single_queue(self) -> None:
        """Mail queued by a version before fleets (one queue, every key under `{q}`) moves
        into this node's queue: that version ran one node, whose bodies are in this spool.
        Key by key, each copied before the old one goes (a crash midway loses nothing: the
        next start goes on); the hashes first, so every index entry finds its hash."""
        if not await self._redis.exists(*(f"{_SINGLE}{name}" for name in _SINGLE_INDEXES)):
            return
        if not await self._redis.set("queue:adopting", self.node, nx=True, ex=300):
            return  # another process of the node is at it
        moved = 0
        for pattern in ("msg:*", "job:*", "acct:*", "leased:*"):
            async for raw in self._redis.scan_iter(match=_SINGLE + pattern, count=1000):
                old = text(raw)
                name = old.removeprefix(_SINGLE)
                new = self.keys.leased if name.startswith("leased:") else self.keys.tag + ":" + name
                if name.startswith(("msg:", "job:")):
                    dumped = await self._redis.dump(old)
                    if dumped is not None:
                        await self._redis.restore(new, 0, dumped, replace=True)
                        moved += name.startswith("msg:")
                elif members := await self._redis.smembers(old):
                    await self._redis.sadd(new, *members)
                await self._redis.unlink(old)
        for name in _SINGLE_INDEXES:
            old = _SINGLE + name
            if name == "held_accounts":
                if held := await self._redis.smembers(old):
                    await self._redis.sadd(_HELD_ACCOUNTS, *held)
            elif entries := await self._redis.zrange(old, 0, -1, withscores=True):
                pairs = cast(list[tuple[bytes, float]], entries)
                scores: dict[str, float] = {text(m): float(score) for m, score in pairs}
                await self._redis.zadd(str(getattr(self.keys, name)), scores)
            await self._redis.unlink(old)
        await self._redis.delete("queue:adopting")
        log.warning("queue.adopted_single_queue", node=self.node, messages=moved)

    async def enqueue(self, envelope: Envelope, body: bytes, message_id: str | None = None) -> str:
        """Spool a whole message and queue it (notices, the CLI); durable when it returns."""
        message_id = message_id or self.new_id()
        spooled = await self.spool.write(message_id, body)
        try:
            return await self.enqueue_spooled(envelope, spooled)
        except BaseException:
            self.spool.remove(message_id)
            raise

    async def enqueue_spooled(
        self,
        envelope: Envelope,
        spooled: Spooled,
        prefix: bytes = b"",
        along: Sequence[Along] = (),
    ) -> str:
        """Queue a body already durable in the spool, with the header lines to put in front
        of it, and one job per domain, in one script; durable when it returns (on the
        replicas too, with `redis.wait_replicas`). What rides `along` (the quota commit,
        the trace) goes in the same round trip."""
        await self.register()
        message_id = spooled.id
        now = self._clock.now()
        groups = split_by_domain(envelope.recipients)
        fields: dict[FieldT, EncodableT] = {
            "mail_from": envelope.mail_from,
            "recipients": json.dumps(list(envelope.recipients)),
            "account": envelope.account,
            "created_at": repr(now),
            "size": len(prefix) + spooled.size,
            "jobs_left": len(groups),
            "jobs": len(groups),
            "prefix": prefix,
        }
        if dsn := envelope.dsn.to_json():
            fields["dsn"] = dsn
        if envelope.sender_verified:
            fields["sender_verified"] = "1"
        k = self.keys
        keys = [k.msg(message_id), k.due, k.messages, k.account(envelope.account)]
        args: list[EncodableT] = [repr(now), message_id, len(fields), *_flat(fields)]
        for n, (domain, rcpts) in enumerate(groups.items()):
            job_id = f"{message_id}.{n}"
            job = _job_fields(message_id, domain, rcpts, now)
            keys.append(k.job(job_id))
            args += [job_id, len(job), *_flat(job)]
        try:
            with store_errors():
                await script_with(self._redis, self._enqueue, keys, args, along, wait=self._wait)
        except NotReplicated:
            await self._unqueue(message_id)
            raise
        return message_id

    async def _unqueue(self, message_id: str) -> None:
        """Take back an enqueue the replicas did not confirm: the client is told to try
        again, so the message must not also be delivered from here. (What rode along, such
        as the quota commit, stands: the retry counts once more.)"""
        try:
            await self._operate("delete", message_id, self.keys)
        except (StoreUnavailable, NotFound) as exc:  # then it is delivered, maybe twice
            log.warning("queue.unqueue_failed", message_id=message_id, error=str(exc))

    async def claim(self, limit: int, lease: float) -> list[Job]:
        await self.register()
        now = self._clock.now()
        token = f"{self.node}:{os.getpid()}:{secrets.token_hex(6)}"
        k = self.keys
        with store_errors():
            raw = await self._claim(
                keys=[k.due, k.held, k.held_accounts, k.leased],
                args=[repr(now), repr(now + lease), limit, token, k.job_prefix, k.msg_prefix],
            )
        jobs = []
        for i in range(0, len(raw), 3):
            job = _job(raw[i].decode(), _decode_pairs(raw[i + 1]), due_at=now + lease)
            message = dict(zip(raw[i + 2][::2], raw[i + 2][1::2], strict=True))
            prefix = message.pop(b"prefix", b"")
            if message:  # else its message is gone (deleted meanwhile): found when delivered
                meta = _message(job.message_id, text_dict(message))
                job = replace(job, meta=meta, prefix=prefix)
            jobs.append(job)
        return jobs

    async def complete(
        self, job: Job, notice: Notice | None = None, along: Sequence[Along] = ()
    ) -> Finished:
        """The job is over (delivered or failed for good).

        The notice is queued in the same step, so it exists exactly when the job ended.
        """
        return await self._end(job, "done", 0.0, (), None, notice, along)

    async def reschedule(
        self,
        job: Job,
        pending: tuple[str, ...],
        due_at: float,
        error: LastError | None,
        notice: Notice | None = None,
        along: Sequence[Along] = (),
    ) -> Finished:
        """Retry `pending` at `due_at` (or park the job if its message was held meanwhile)."""
        return await self._end(job, "retry", due_at, pending, error, notice, along)

    async def postpone(self, job: Job, due_at: float) -> Finished:
        """Give the job back to be tried at `due_at`, as if it had not been claimed: no
        attempt is counted (the destination's shaping made it wait)."""
        return await self._end(job, "postpone", due_at, job.recipients, job.last_error, None, ())

    async def _end(
        self,
        job: Job,
        action: str,
        due_at: float,
        pending: tuple[str, ...],
        error: LastError | None,
        notice: Notice | None,
        along: Sequence[Along],
    ) -> Finished:
        now = self._clock.now()
        k = self.keys
        notice_id = notice.id if notice is not None else ""
        notice_job = f"{notice_id}.0"
        notice_args: list[str | bytes] = ["", "", "", "{}", "{}"]
        if notice is not None:
            await self.spool.write(notice_id, notice.body)
            notice_args = [
                notice.delay,
                notice_id,
                notice_job,
                json.dumps(
                    {
                        "mail_from": "",
                        "recipients": json.dumps([notice.recipient]),
                        "account": notice.account,
                        "created_at": repr(now),
                        "size": str(len(notice.body)),
                        "jobs_left": "1",
                        "jobs": "1",
                        "notice": notice.kind,
                        "prefix": "",
                    }
                ),
                json.dumps(
                    {
                        k: str(v)
                        for k, v in _job_fields(
                            notice_id, domain_of(notice.recipient), (notice.recipient,), now
                        ).items()
                    }
                ),
            ]
        try:
            with store_errors():
                reply = await script_with(
                    self._redis,
                    self._finish,
                    [
                        k.due,
                        k.job(job.id),
                        k.msg(job.message_id),
                        k.messages,
                        k.held,
                        k.msg(notice_id),
                        k.job(notice_job),
                        k.leased,
                    ],
                    [
                        job.token,
                        action,
                        job.id,
                        job.message_id,
                        repr(due_at),
                        json.dumps(list(pending)),
                        json.dumps(_error_fields(error)),
                        repr(now),
                        k.acct_prefix,
                        *notice_args,
                    ],
                    along,
                )
        except BaseException:
            if notice is not None:  # not queued: its body goes (a retry writes it again)
                self._forget_now(notice_id)
            raise
        assert isinstance(reply, list)
        result, ended = reply
        finished = Finished(text(result))
        if notice is not None and finished is not Finished.NOTICE_QUEUED:
            await self._forget_body(notice_id)
        if text(ended) == "ended":
            await self._forget_body(job.message_id)
        return finished

    async def _forget_body(self, message_id: str) -> None:
        """The message left the queue: its body goes (on a thread). Failing, `relay spool
        check` finds it."""
        try:
            await self.spool.discard(message_id)
        except SpoolError as exc:
            log.warning("spool.remove_failed", message_id=message_id, error=str(exc))

    def _forget_now(self, message_id: str) -> None:
        """`_forget_body` where nothing may be awaited (the step is being cancelled)."""
        try:
            self.spool.remove(message_id)
        except SpoolError as exc:
            log.warning("spool.remove_failed", message_id=message_id, error=str(exc))

    async def renew(self, jobs: list[Job], lease: float) -> int:
        """Extend the leases of jobs still being attempted (one round trip for all of them);
        the number extended."""
        if not jobs:
            return 0
        pairs = [value for job in jobs for value in (job.id, job.token)]
        with store_errors():
            renewed = await self._renew(
                keys=[self.keys.due],
                args=[repr(self._clock.now() + lease), self.keys.job_prefix, *pairs],
            )
        return int(renewed)

    async def reclaim(self, pid: int | None = None) -> int:
        """Make due now the jobs leased by this node's process `pid`, or by any process of
        this node (None: call it only when none of them runs); the number taken back."""
        prefix = f"{self.node}:" if pid is None else f"{self.node}:{pid}:"
        with store_errors():
            count = await self._reclaim(
                keys=[self.keys.due, self.keys.leased],
                args=[repr(self._clock.now()), self.keys.job_prefix, prefix],
            )
        return int(count)

    async def load(self, message_id: str) -> StoredMessage:
        """A message of this node and its body (SpoolMissing when the body is not in the
        spool; NotFound when the message is not in this node's queue)."""
        meta, prefix = await self._meta(message_id, self.keys)
        return StoredMessage(meta=meta, body=prefix + await self.spool.read(message_id))

    async def load_claimed(self, job: Job) -> StoredMessage:
        """The message of a job just claimed: its metadata came with the claim, so only the
        body is read (from the spool)."""
        if job.meta is None:
            return await self.load(job.message_id)
        return StoredMessage(job.meta, job.prefix + await self.spool.read(job.message_id))

    async def meta(self, message_id: str) -> QueuedMessage:
        """A message queued on any node."""
        return (await self._meta(message_id, await self._queue_of(message_id)))[0]

    async def prefix(self, message_id: str) -> bytes:
        """The header lines added at acceptance (what is left to show without the body)."""
        return (await self._meta(message_id, await self._queue_of(message_id)))[1]

    async def node_of(self, message_id: str) -> str:
        """The node whose queue (and spool) has the message."""
        return (await self._queue_of(message_id)).node

    async def _meta(self, message_id: str, keys: QueueKeys) -> tuple[QueuedMessage, bytes]:
        with store_errors():
            raw = await self._redis.hgetall(keys.msg(message_id))
        if not raw:
            raise NotFound(f"no message {message_id!r} in the queue")
        prefix = raw.pop(b"prefix", b"")
        raw.pop(b"body", None)
        assert isinstance(prefix, bytes)
        return _message(message_id, text_dict(raw)), prefix

    async def next_due(self) -> float | None:
        """When the earliest job of this node (claimed or not) comes due; None when its
        queue is empty."""
        with store_errors():
            first = await self._redis.zrange(self.keys.due, 0, 0, withscores=True)
        return float(first[0][1]) if first else None

    async def list_messages(self, limit: int = 100) -> list[QueuedMessage]:
        """The oldest messages of the fleet's queues."""
        found: list[QueuedMessage] = []
        with store_errors():
            for keys in await self._queues():
                ids = [text(i) for i in await self._redis.zrange(keys.messages, 0, limit - 1)]
                async with self._redis.pipeline(transaction=False) as pipe:
                    for mid in ids:
                        pipe.hmget(keys.msg(mid), _LISTED)
                    rows = await pipe.execute()
                found += [
                    _message(
                        mid,
                        {k: text(v) for k, v in zip(_LISTED, row, strict=True) if v is not None},
                    )
                    for mid, row in zip(ids, rows, strict=True)
                    if row[0] is not None
                ]
        return sorted(found, key=lambda m: (m.created_at, m.id))[:limit]

    async def jobs_of(self, message_id: str) -> list[Job]:
        keys = await self._queue_of(message_id)
        meta = (await self._meta(message_id, keys))[0]
        jobs = []
        with store_errors():
            for job_id in await self._job_ids(message_id, keys, meta):
                fields = text_dict(await self._redis.hgetall(keys.job(job_id)))
                if fields:
                    due = await self._redis.zscore(keys.due, job_id)
                    held = await self._redis.zscore(keys.held, job_id)
                    jobs.append(_job(job_id, fields, due_at=float(due or 0), held=held is not None))
        return jobs

    async def message_ids(self) -> set[str]:
        """Every message id queued on this node (for comparing with its spool)."""
        with store_errors():
            return {text(m) async for m, _ in self._redis.zscan_iter(self.keys.messages)}

    async def count(self) -> int:
        """Messages queued on all the nodes."""
        with store_errors():
            return sum([int(await self._redis.zcard(k.messages)) for k in await self._queues()])

    # --- operator actions (and the hooks suspension uses), on any node's queue ---

    async def hold(self, message_id: str) -> bool:
        """Stop attempting the message until released; its age stops counting. False: was held."""
        return await self._hold_or_release("hold", message_id, await self._queue_of(message_id))

    async def release(self, message_id: str) -> bool:
        """Attempt a held message again now. False: it was not held."""
        keys = await self._queue_of(message_id)
        return await self._release(message_id, keys)

    async def _release(self, message_id: str, keys: QueueKeys) -> bool:
        meta = (await self._meta(message_id, keys))[0]
        if await self._account_held(meta.account):
            raise InvalidInput(
                f"the mail of account {meta.account!r} is held: release the account instead"
            )
        return await self._hold_or_release("release", message_id, keys)

    async def retry(self, message_id: str) -> int:
        """Make every waiting job of the message due now; the number of jobs made due."""
        return await self._operate("retry", message_id, await self._queue_of(message_id))

    async def delete(self, message_id: str) -> None:
        """Drop the message and its jobs without any notice (a job being attempted may still
        deliver; its result is then discarded). The body of a message of another node stays
        in that node's spool until its `relay spool check --fix`."""
        await self._delete(message_id, await self._queue_of(message_id))

    async def _delete(self, message_id: str, keys: QueueKeys) -> bool:
        await self._operate("delete", message_id, keys)
        if keys.node == self.node:
            await self._forget_body(message_id)
        return True

    async def hold_account(self, login: str) -> int:
        """Hold every queued message of the account, on every node, and any it queues later
        (suspension). Returns the number of messages newly held.
        """
        with store_errors():
            await self._redis.sadd(_HELD_ACCOUNTS, login)
            for keys in await self._queues():
                await self._redis.sadd(keys.held_accounts, login)
        return await self._for_account(
            login, lambda mid, keys: self._hold_or_release("hold", mid, keys)
        )

    async def release_account(self, login: str) -> int:
        """Undo `hold_account`: its mail is attempted again now. Returns messages released."""
        with store_errors():
            await self._redis.srem(_HELD_ACCOUNTS, login)
            for keys in await self._queues():
                await self._redis.srem(keys.held_accounts, login)
        return await self._for_account(login, self._release)

    async def retry_account(self, login: str) -> int:
        return await self._for_account(login, self._retry_if_not_held)

    async def delete_account(self, login: str) -> int:
        return await self._for_account(login, self._delete)

    async def held_accounts(self) -> list[str]:
        with store_errors():
            return sorted(text(a) for a in await self._redis.smembers(_HELD_ACCOUNTS))

    async def messages_of(self, login: str) -> list[str]:
        """The account's queued messages, on every node."""
        return sorted(mid for mid, _ in await self._messages_of(login))

    async def _messages_of(self, login: str) -> list[tuple[str, QueueKeys]]:
        found = []
        with store_errors():
            for keys in await self._queues():
                found += [(text(m), keys) for m in await self._redis.smembers(keys.account(login))]
        return found

    async def _retry_if_not_held(self, message_id: str, keys: QueueKeys) -> bool:
        try:
            return await self._operate("retry", message_id, keys) > 0
        except InvalidInput:
            return False

    async def _for_account(
        self, login: str, action: Callable[[str, QueueKeys], Awaitable[object]]
    ) -> int:
        done = 0
        for message_id, keys in sorted(await self._messages_of(login), key=lambda m: m[0]):
            try:
                done += bool(await action(message_id, keys))
            except NotFound:
                continue  # delivered meanwhile
        return done

    async def _account_held(self, login: str) -> bool:
        with store_errors():
            return bool(await self._redis.sismember(_HELD_ACCOUNTS, login))

    async def _queues(self) -> list[QueueKeys]:
        """This node's queue, then the other nodes'."""
        with store_errors():
            others = sorted(text(n) for n in await self._redis.smembers(_NODES))
        return [self.keys] + [QueueKeys(node) for node in others if node != self.node]

    async def _queue_of(self, message_id: str) -> QueueKeys:
        """The queue (this node's first) that has the message."""
        with store_errors():
            for keys in await self._queues():
                if await self._redis.exists(keys.msg(message_id)):
                    return keys
        raise NotFound(f"no message {message_id!r} in the queue")

    async def _hold_or_release(self, action: str, message_id: str, keys: QueueKeys) -> bool:
        job_ids = await self._job_ids(message_id, keys)
        with store_errors():
            result = await self._hold(
                keys=[keys.due, keys.held, keys.msg(message_id)],
                args=[action, repr(self._clock.now()), keys.job_prefix, *job_ids],
            )
        held = _Held(text(result))
        if held is _Held.NO_MESSAGE:
            raise NotFound(f"no message {message_id!r} in the queue")
        return held is _Held.CHANGED

    async def _operate(self, action: str, message_id: str, keys: QueueKeys) -> int:
        job_ids = await self._job_ids(message_id, keys)
        with store_errors():
            result = await self._remove(
                keys=[keys.due, keys.held, keys.msg(message_id), keys.messages],
                args=[
                    action,
                    repr(self._clock.now()),
                    keys.job_prefix,
                    keys.acct_prefix,
                    message_id,
                    *job_ids,
                ],
            )
        if isinstance(result, int):
            return result  # the number of jobs touched
        if text(result) == "held":
            raise InvalidInput(f"message {message_id} is held: release it first")
        raise NotFound(f"no message {message_id!r} in the queue")

    async def _job_ids(
        self, message_id: str, keys: QueueKeys, meta: QueuedMessage | None = None
    ) -> list[str]:
        with store_errors():
            stored = await self._redis.hget(keys.msg(message_id), "jobs")
        if stored is not None:
            count = int(stored)
        else:  # queued before the count was stored
            meta = meta or (await self._meta(message_id, keys))[0]
            count = len(split_by_domain(meta.recipients))
        return [f"{message_id}.{n}" for n in range(count)]


def _job_fields(
    message_id: str, domain: str, rcpts: tuple[str, ...], now: float
) -> dict[FieldT, EncodableT]:
    return {
        "message_id": message_id,
        "domain": domain,
        "recipients": json.dumps(list(rcpts)),
        "attempts": 0,
        "created_at": repr(now),
        "due_at": repr(now),
    }


def _flat(fields: dict[FieldT, EncodableT]) -> list[EncodableT]:
    return [item for pair in fields.items() for item in pair]


def _error_fields(error: LastError | None) -> dict[str, str]:
    """The job's last-error fields as finish.lua stores them (text cut to 1,000 characters)."""
    if error is None:
        return {}
    return replace(error, text=error.text[:1000]).as_fields()


def _decode_pairs(flat: list[bytes]) -> dict[str, str]:
    return {flat[i].decode(): flat[i + 1].decode() for i in range(0, len(flat), 2)}


def _job(job_id: str, fields: dict[str, str], due_at: float, held: bool = False) -> Job:
    return Job(
        id=job_id,
        message_id=fields["message_id"],
        domain=fields["domain"],
        recipients=tuple(json.loads(fields["recipients"])),
        attempts=int(fields.get("attempts", 0)),
        created_at=float(fields["created_at"]),
        due_at=due_at,
        last_error=LastError.from_fields(fields),
        held=held,
        token=fields.get("token", ""),
    )


def _message(message_id: str, fields: dict[str, str]) -> QueuedMessage:
    held_at = fields.get("held_at")
    return QueuedMessage(
        id=message_id,
        mail_from=fields["mail_from"],
        recipients=tuple(json.loads(fields["recipients"])),
        account=fields["account"],
        created_at=float(fields["created_at"]),
        size=int(fields["size"]),
        jobs_left=int(fields["jobs_left"]),
        dsn=DsnRequest.from_json(fields.get("dsn", "")),
        held_at=float(held_at) if held_at else None,
        held_for=float(fields.get("held_for") or 0.0),
        delay_notified=bool(fields.get("delay_notified")),
        notice=fields.get("notice", ""),
        sender_verified=fields.get("sender_verified") == "1",
    )
