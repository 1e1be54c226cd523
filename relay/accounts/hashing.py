"""The bounded queue in front of the password-hashing threads.

argon2id costs ~20 ms of CPU on purpose, and a process has a few threads for it. Without a
bound, a flood of wrong passwords queues thousands of hashes and a customer's login waits
behind all of them (issue 17: 5.8 s behind 250 hostile attempts). So a password check joins
one of two lanes: `KNOWN` when the login has succeeded from the client's address before
(served first), `OTHER` otherwise; each lane holds a bounded number of waiting checks, and
a check that finds its lane full is refused at once (the client gets `454 4.7.0`, try
later) instead of adding to everyone's wait.

`HashAdmission` is the decision, pure; `HashingQueue` applies it around a thread pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from relay.accounts.passwords import hash_password, verify_password
from relay.errors import Busy

__all__ = ["Admit", "HashAdmission", "HashingQueue", "Lane", "default_threads", "shared_queue"]

T = TypeVar("T")


def default_threads() -> int:
    """argon2 releases the GIL: with as many hashing threads as cores, a burst of logins
    starves the event loop that serves every session. One core is left to the loop."""
    return max(1, (os.cpu_count() or 2) - 1)


class Lane(enum.Enum):
    KNOWN = "known"
    """The login succeeded from this client address before: a customer, served first."""
    OTHER = "other"


class Admit(enum.Enum):
    RUN = "run"
    WAIT = "wait"
    REFUSE = "refuse"


@dataclass(frozen=True)
class HashAdmission:
    """Who may run or wait for a hashing thread."""

    threads: int
    queue: int = 32
    """Checks of the OTHER lane that may wait; past it they are refused at once."""
    known_queue: int = 256
    """Checks of the KNOWN lane that may wait (a bound, so that nothing grows unbounded)."""

    def admit(self, lane: Lane, *, running: int, waiting: dict[Lane, int]) -> Admit:
        if running < self.threads and not any(waiting.values()):
            return Admit.RUN
        bound = self.known_queue if lane is Lane.KNOWN else self.queue
        return Admit.WAIT if waiting.get(lane, 0) < bound else Admit.REFUSE

    def next_lane(self, waiting: dict[Lane, int]) -> Lane | None:
        """Which lane a freed thread serves: the known addresses first."""
        for lane in (Lane.KNOWN, Lane.OTHER):
            if waiting.get(lane, 0) > 0:
                return lane
        return None


class HashingQueue:
    """`HashAdmission` applied around a thread pool of `admission.threads` threads.

    A thread counts as busy from the moment a check is given it until the hash really ends
    (a cancelled waiter does not free a thread that is still hashing), so at most `threads`
    hashes run and the lanes decide who is next. Event-loop only (not thread-safe)."""

    def __init__(self, admission: HashAdmission) -> None:
        self.admission = admission
        self._pool = ThreadPoolExecutor(max_workers=admission.threads, thread_name_prefix="kdf")
        self._running = 0
        self._lanes: dict[Lane, deque[asyncio.Future[None]]] = {lane: deque() for lane in Lane}

    def close(self) -> None:
        """Let the hashing threads end once the checks they run are done."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def waiting(self) -> dict[Lane, int]:
        return {lane: len(queue) for lane, queue in self._lanes.items()}

    def full(self, *, known: bool) -> bool:
        """Whether a check from such an address would be refused now: lets a caller skip the
        work it does before queueing (`verify` decides again when it is called)."""
        lane = Lane.KNOWN if known else Lane.OTHER
        decision = self.admission.admit(lane, running=self._running, waiting=self.waiting())
        return decision is Admit.REFUSE

    async def verify(self, password_hash: str | None, password: str, *, known: bool) -> bool:
        """Whether the password matches; raises `Busy` when its lane is full."""
        lane = Lane.KNOWN if known else Lane.OTHER
        return await self._run(lane, verify_password, password_hash, password)

    async def hash(self, password: str) -> str:
        """A new hash (operators' commands): never refused, in the first lane."""
        return await self._run(Lane.KNOWN, hash_password, password, refuse=False)

    async def _run(self, lane: Lane, fn: Callable[..., T], *args: object, refuse: bool = True) -> T:
        decision = self.admission.admit(lane, running=self._running, waiting=self.waiting())
        if decision is Admit.REFUSE and refuse:
            raise Busy(f"password checks of lane {lane.value} are all taken")
        if decision is Admit.RUN:
            self._running += 1
        else:
            await self._wait_turn(lane)
        loop = asyncio.get_running_loop()
        try:
            job: Future[T] = self._pool.submit(fn, *args)
        except BaseException:
            self._release()
            raise
        job.add_done_callback(lambda _: self._finished(loop))
        return await asyncio.wrap_future(job)

    async def _wait_turn(self, lane: Lane) -> None:
        """Until `_release` hands this waiter a thread (the count is taken for it there)."""
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._lanes[lane].append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._release()  # handed a thread just as it went away: pass it on
            else:
                with contextlib.suppress(ValueError):  # `_release` may have dropped it
                    self._lanes[lane].remove(turn)
            raise

    def _finished(self, loop: asyncio.AbstractEventLoop) -> None:
        """A hash ended (in its thread): give its thread on, in the loop."""
        try:
            loop.call_soon_threadsafe(self._release)
        except RuntimeError:  # the loop closed while it ran: nobody there waits any more
            self._running -= 1

    def _release(self) -> None:
        self._running -= 1
        while (lane := self.admission.next_lane(self.waiting())) is not None:
            turn = self._lanes[lane].popleft()
            if not turn.done():
                self._running += 1
                turn.set_result(None)
                return


_SHARED: HashingQueue | None = None


def shared_queue() -> HashingQueue:
    """The queue of stores that were not given one (operator commands, tests)."""
    global _SHARED
    if _SHARED is None:
        _SHARED = HashingQueue(HashAdmission(threads=default_threads()))
    return _SHARED
