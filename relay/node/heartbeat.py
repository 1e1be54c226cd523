"""The node's heartbeat: every `node.heartbeat` it writes its record in Redis and reads back
whether an operator asked it to drain.

The supervisor of `relay run` beats (its children never do: one record per node, and the
parent is the one process that knows them all); a single process (`--processes 1`) beats
as one of its own parts. One beat is one pipeline of three separate commands (the record,
the drain field, the index), not a MULTI: the record and the index live in different slots
of a cluster. Its answer sets the node's `DrainFlag`, which every process reads for free.

The parent runs no event loop while it has children, so its beat uses redis-py's blocking
client, with a deadline no longer than a heartbeat (a Redis that does not answer delays
the supervisor's other duties by that much at most); a single process beats on its own
asyncio client. Both build the same record and read the same answer (`_queue`, `settle`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.metadata
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError
from redis.typing import EncodableT, FieldT

from relay.clock import Clock
from relay.config import Settings
from relay.node.drain import DrainFlag
from relay.node.registry import DRAIN, NODES, NodeRecord, Reported, node_key
from relay.redis_client import hide_secrets

__all__ = ["Heartbeat", "SpoolGauge", "rescan_after", "spool_usage"]

log = structlog.get_logger("relay")

SCAN_SHARE = 0.05
"""Share of the beating process's time that counting the spool may take at most."""


def rescan_after(took: float) -> float:
    """Seconds to wait before counting the spool again after a count that took `took`
    seconds, so that counting takes at most `SCAN_SHARE` of the time: a spool of a few
    thousand bodies is counted at every beat, one of a million (seconds to walk) about
    every half minute, and the beat never waits for more than one count."""
    return took * (1 - SCAN_SHARE) / SCAN_SHARE


def spool_usage(root: Path) -> tuple[int, int]:
    """(files, bytes) of the bodies under the spool's root. Bodies come and go while it
    counts: one unlinked meanwhile is skipped, never an error; so is a folder it cannot read
    (the count is a report, and the beat must go on)."""
    files = size = 0
    try:
        folders = list(os.scandir(root))
    except OSError:
        return 0, 0
    for folder in folders:
        try:
            if not folder.is_dir(follow_symlinks=False):
                continue
            entries = list(os.scandir(folder.path))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_file(follow_symlinks=False):
                    size += entry.stat(follow_symlinks=False).st_size
                    files += 1
            except OSError:
                continue
    return files, size


class SpoolGauge:
    """The spool's size as the last count found it, counted again when `rescan_after` says."""

    def __init__(self, root: Path, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._root = root
        self._monotonic = monotonic
        self._last = (0, 0)
        self._next = 0.0

    def measure(self) -> tuple[int, int]:
        started = self._monotonic()
        if started >= self._next:
            self._last = spool_usage(self._root)
            finished = self._monotonic()
            self._next = finished + rescan_after(finished - started)
        return self._last


@functools.cache
def _version() -> str:
    try:
        return importlib.metadata.version("relay")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover (run from a checkout)
        return "unknown"


class Heartbeat:
    """What this node says about itself, and what it learns back (the drain)."""

    def __init__(self, settings: Settings, drain: DrainFlag, clock: Clock) -> None:
        self.settings = settings
        self.drain = drain
        self._clock = clock
        self._started = clock.now()
        self._gauge = SpoolGauge(settings.spool.dir)
        self._failing = False
        self.every = settings.node.heartbeat.seconds

    def record(self, processes: int, spool: tuple[int, int], state: Reported) -> NodeRecord:
        node, settings = self.settings.node, self.settings
        listeners = [f"{x.address} ({x.tls})" for x in settings.submission.listeners]
        if settings.http.enabled:
            listeners.append(f"{settings.http.listen} (http)")
        return NodeRecord(
            id=node.id,
            version=_version(),
            host=socket.gethostname(),
            pid=os.getpid(),
            processes=processes,
            spool_files=spool[0],
            spool_bytes=spool[1],
            egress=tuple(e.ip for e in settings.delivery.egress),
            listeners=tuple(listeners),
            state=state,
            started_at=self._started,
            beat_at=self._clock.now(),
            beat_every=self.every,
            down_after=node.down_after,
        )

    def _state(self, stopped: bool) -> Reported:
        if stopped:
            return "stopped"
        return "draining" if self.drain.is_set() else "accepting"

    @staticmethod
    def _queue(pipe: redis.client.Pipeline | aioredis.client.Pipeline, record: NodeRecord) -> None:
        """The beat's commands (redis-py's blocking and asyncio pipelines take the same)."""
        key = node_key(record.id)
        fields: dict[FieldT, EncodableT] = {k: v for k, v in record.fields().items()}
        pipe.hset(key, mapping=fields)
        pipe.hget(key, DRAIN)
        pipe.zadd(NODES, {record.id: record.beat_at})

    def settle(self, results: list[Any]) -> None:
        """A beat went through: drain or accept as the operator's field says from now on."""
        if self._failing:
            self._failing = False
            log.info("node.beat_resumed", node=self.settings.node.id)
        asked = results[1] is not None
        if asked != self.drain.is_set():
            self.drain.set(asked)
            if asked:
                log.warning("node.draining", node=self.settings.node.id)
            else:
                log.info("node.accepting", node=self.settings.node.id)

    def failed(self, exc: BaseException) -> None:
        """A beat that did not go through: logged once until one does; the node keeps
        the drain state it knew (a Redis outage neither drains nor resumes it)."""
        if not self._failing:
            self._failing = True
            error = hide_secrets(str(exc) or type(exc).__name__, self.settings.redis)
            log.error("node.beat_failed", node=self.settings.node.id, error=error)

    # --- the supervisor's beat (blocking) ---

    def beat(self, client: redis.Redis, processes: int, *, stopped: bool = False) -> None:
        record = self.record(processes, self._gauge.measure(), self._state(stopped))
        try:
            pipe = client.pipeline(transaction=False)
            self._queue(pipe, record)
            self.settle(pipe.execute())
        except (RedisError, OSError) as exc:
            self.failed(exc)

    # --- a single process's beat (one of its parts) ---

    async def run(self, client: aioredis.Redis, stop: asyncio.Event, *, deadline: float) -> None:
        """Beat until `stop`, then once more as `stopped`."""
        while True:
            stopped = stop.is_set()
            spool = await asyncio.to_thread(self._gauge.measure)
            record = self.record(1, spool, self._state(stopped))
            try:
                async with asyncio.timeout(deadline):
                    pipe = client.pipeline(transaction=False)
                    self._queue(pipe, record)
                    self.settle(await pipe.execute())
            except (RedisError, OSError, TimeoutError) as exc:
                self.failed(exc)
            if stopped:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.every)
