"""`relay run --processes N`: a supervisor (this process) and N children running `serve`.

Python runs one core per process; the node's other cores are used by more processes, not
threads. The parent does what must happen once per node, then forks:
- it creates the self-signed certificate if asked, starts the embedded Redis (children get
  its URL: none of them owns it) and checks that Redis answers and that every listener
  address can be bound, so a node that cannot work fails at once with one clear line;
- it creates the node's shared counters (`relay.node.shared`) before forking, so the
  children inherit them: per-address and total submission sessions and per-destination
  delivery sessions hold over the node;
- each child listens on the same ports with SO_REUSEPORT (the kernel spreads new
  connections over the listening processes; a child that is restarting gets none) and
  claims delivery jobs from the shared queue like any other worker (leases in Redis);
- a child that dies is logged (`relay.child_died`: slot, pid, exit code or signal, restarts)
  and restarted (`restart.RestartPolicy`: at once after a healthy run, with a doubling delay
  when it keeps dying at start, giving up after a few such deaths in a row); what it held
  in the shared counters is given back first;
- SIGTERM or SIGINT stops the children (SIGTERM to each; each closes its listeners and lets
  its deliveries finish) and waits for them, then stops the embedded Redis; a second signal,
  or children still running after `STOP_GRACE`, gets them SIGKILL;
- the children stop by themselves when the parent is gone (even after `kill -9` of it):
  they watch a pipe whose only writer is the parent;
- it beats for the node (`relay.node.heartbeat`): every `node.heartbeat` it writes the
  node's record in Redis and reads back whether to drain, which it passes on to its
  children through shared memory (`DrainFlag`); its last beat, as it exits, says `stopped`.

The parent never runs an event loop while it has children (forking a running loop is
unsafe); it waits in `select` on a wake-up pipe that signals write to.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import structlog
from redis import Redis as SyncRedis
from redis.exceptions import RedisError

from relay import metrics
from relay.app import install_stop_signals, serve
from relay.clock import SystemClock
from relay.config import RedisSettings, Settings
from relay.embedded_redis import EmbeddedRedis
from relay.errors import ConfigError, RelayError, StoreUnavailable
from relay.node.errors import GaveUp, PartDied
from relay.node.heartbeat import Heartbeat
from relay.node.restart import RestartPolicy, exit_status
from relay.node.share import NodeShare, attach
from relay.queue import QueueStore
from relay.redis_client import connect_blocking, connect_settings, describe, failure_text
from relay.tls import ensure_self_signed

__all__ = ["STOP_GRACE", "run_node", "run_one"]

log = structlog.get_logger("relay")

STOP_GRACE = 60.0
"""Seconds the children get to stop cleanly before they are killed."""
_HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGHUP)


def run_one(settings: Settings) -> None:
    """`--processes 1`: `serve` in this process until SIGTERM/SIGINT, no supervisor.
    Raises PartDied when a part died (the caller exits non-zero)."""
    if settings.http.enabled:
        metrics.prepare(settings.http.metrics_dir)
    run_loop(_serve_until_stopped(settings, parent_fd=None), uvloop=settings.run.uvloop)


def run_loop(main: Coroutine[Any, Any, None], *, uvloop: bool) -> None:
    """`asyncio.run`, on uvloop's loop when asked and installed."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if uvloop:
        try:
            import uvloop as installed
        except ImportError:
            pass
        else:
            factory = installed.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main)


async def _serve_until_stopped(settings: Settings, *, parent_fd: int | None) -> None:
    stop = asyncio.Event()
    install_stop_signals(stop)
    if parent_fd is not None:
        loop = asyncio.get_running_loop()

        def parent_gone() -> None:
            loop.remove_reader(parent_fd)
            log.warning("relay.parent_gone", pid=os.getpid())
            stop.set()

        loop.add_reader(parent_fd, parent_gone)
    await serve(settings, stop=stop, reclaim=parent_fd is None)  # else the parent does it


def run_node(settings: Settings, processes: int, policy: RestartPolicy | None = None) -> None:
    """The supervisor: returns after a clean stop; raises GaveUp when children keep dying,
    and RelayError (one line) when the node cannot start."""
    settings, embedded = _prepare(settings)
    if settings.http.enabled:
        metrics.prepare(settings.http.metrics_dir)  # before forking: one registry for all
    try:
        reclaim(settings)  # no process of this node runs yet: all its leases are stale
        Supervisor(settings, processes, policy or RestartPolicy()).run()
    finally:
        if embedded is not None:
            embedded.stop()
            log.info("redis.embedded_stopped", dir=str(settings.redis.embedded_dir))


def _prepare(settings: Settings) -> tuple[Settings, EmbeddedRedis | None]:
    """Everything done once per node before forking; the settings the children get."""
    settings.tls.require_files()
    if settings.tls.self_signed and ensure_self_signed(
        settings.tls.cert, settings.tls.key, settings.hostname
    ):
        log.info("tls.self_signed_created", cert=str(settings.tls.cert))
    for listener in settings.submission.listeners:
        _check_bindable(listener.address.host, listener.address.port, str(listener.address))
    if settings.http.enabled:
        from relay.web.app import http_socket

        http_socket(settings.http, reuse_port=True).close()  # one clear line if it cannot
    embedded = None
    url = settings.redis.url
    if not url and not settings.redis.cluster_nodes and not settings.redis.sentinels:
        embedded = EmbeddedRedis(settings.redis.embedded_dir)
        url = embedded.url
        if embedded.is_running():
            embedded = None  # another relay owns it; share it, as `serve` would
        else:
            embedded.start()
            log.info("redis.embedded_started", dir=str(settings.redis.embedded_dir))
        settings = settings.model_copy(
            update={"redis": settings.redis.model_copy(update={"url": url})}
        )
    try:
        _ping(settings.redis)
    except BaseException:
        if embedded is not None:
            embedded.stop()
        raise
    return settings, embedded


def reclaim(settings: Settings, pid: int | None = None) -> None:
    """Make the jobs leased by a dead child (or, with no pid, by any process of this node)
    due now. A short-lived loop of its own: the parent runs none while it has children, and
    this one is closed before the next fork."""

    async def take_back() -> int:
        client = connect_settings(settings.redis)
        try:
            return await QueueStore.from_settings(client, SystemClock(), settings).reclaim(pid)
        finally:
            await client.aclose()

    try:
        taken = asyncio.run(take_back())
    except RelayError as exc:  # the leases end on their own; only later
        log.error("queue.reclaim_failed", pid=pid, error=str(exc))
        return
    if taken:
        log.warning("queue.reclaimed", jobs=taken, pid=pid)


def _ping(settings: RedisSettings) -> None:
    """One PING through the client the children will use (one server, Cluster or Sentinel),
    so an unreachable Redis is one clear line before any fork."""

    async def ping() -> None:
        client = connect_settings(settings)
        try:
            await client.ping()
        finally:
            await client.aclose()

    try:
        asyncio.run(ping())
    except (RedisError, OSError) as exc:
        reason = failure_text(exc, settings)
        raise StoreUnavailable(f"cannot reach Redis at {describe(settings)}: {reason}") from None


def _check_bindable(host: str, port: int, name: str) -> None:
    """Bind (and release) the address as the children will (SO_REUSEPORT), so a port taken
    by another program is one clear error now, not children dying one after the other."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, kind, proto, _, address in addresses:
            with socket.socket(family, kind, proto) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
    except OSError as exc:
        raise ConfigError(
            f"submission.listeners: cannot listen on {name}: {exc.strerror or exc}"
        ) from None


@dataclass
class _Child:
    slot: int
    pid: int = 0
    started: float = 0.0
    restarts: int = 0
    due: float | None = None
    """When a dead child's replacement starts (monotonic); None: running, or not to start."""


@dataclass
class Supervisor:
    settings: Settings
    processes: int
    policy: RestartPolicy
    share: NodeShare = field(init=False)
    children: list[_Child] = field(init=False)
    streak: int = 0
    stopping: float | None = None
    """When the stop began (monotonic); None: running."""
    gave_up: GaveUp | None = None
    signals: list[int] = field(default_factory=list)
    heartbeat: Heartbeat = field(init=False)
    beat_due: float = 0.0
    """When the next heartbeat is due (monotonic)."""
    _redis: SyncRedis | None = None

    def __post_init__(self) -> None:
        self.share = NodeShare.create(self.settings, self.processes)
        self.children = [_Child(slot) for slot in range(self.processes)]
        self.heartbeat = Heartbeat(self.settings, self.share.drain, SystemClock())

    def _beat(self, *, stopped: bool = False) -> None:
        """Write the node's record (and learn whether to drain), on a blocking client whose
        calls last a heartbeat at most: the supervisor's other duties wait meanwhile."""
        if self._redis is None:
            timeout = min(self.settings.redis.timeout.seconds, self.heartbeat.every)
            self._redis = connect_blocking(self.settings.redis, timeout)
        alive = 0 if stopped else sum(1 for child in self.children if child.pid)
        self.heartbeat.beat(self._redis, alive, stopped=stopped)
        self.beat_due = time.monotonic() + self.heartbeat.every

    def _disconnect(self) -> None:
        """Before a fork (the child must not inherit the parent's Redis socket) and at exit."""
        if self._redis is not None:
            with contextlib.suppress(Exception):
                self._redis.close()
            self._redis = None

    def run(self) -> None:
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        # The children's end of "is the parent alive": EOF on it when the parent is gone.
        parent_r, parent_w = os.pipe()
        previous = {sig: signal.signal(sig, self._on_signal) for sig in _HANDLED}
        previous_wakeup = signal.set_wakeup_fd(wake_w.fileno())
        try:
            log.info("relay.node_starting", processes=self.processes, pid=os.getpid())
            for child in self.children:
                self._start(child, (wake_r, wake_w, parent_w), parent_r)
            while True:
                self._handle_signals()
                self._reap()
                now = time.monotonic()
                if self.stopping is not None:
                    if not self._alive():
                        break
                    if now - self.stopping > STOP_GRACE:
                        self._kill_all()
                else:
                    for child in self.children:
                        if child.due is not None and child.due <= now:
                            self._start(child, (wake_r, wake_w, parent_w), parent_r)
                if time.monotonic() >= self.beat_due:
                    self._beat()
                _wait(wake_r, self._next_timeout(time.monotonic()))
            self._beat(stopped=True)
        finally:
            self._disconnect()
            signal.set_wakeup_fd(previous_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            wake_r.close()
            wake_w.close()
            os.close(parent_r)
            os.close(parent_w)
        if self.gave_up is not None:
            raise self.gave_up
        log.info("relay.node_stopped", pid=os.getpid())

    # --- the parent's side ---

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum != signal.SIGCHLD:
            self.signals.append(signum)

    def _handle_signals(self) -> None:
        while self.signals:
            signum = self.signals.pop(0)
            if signum == signal.SIGHUP:  # reload: each child reloads its shaping rules
                self._signal_all(signal.SIGHUP)
            elif self.stopping is None:
                log.info("relay.node_stopping", signal=signal.Signals(signum).name)
                self._stop_all()
            else:  # asked again: do not wait for the stragglers
                log.warning("relay.killing_children", signal=signal.Signals(signum).name)
                self._kill_all()

    def _stop_all(self) -> None:
        self.stopping = time.monotonic()
        for child in self.children:
            child.due = None
            if child.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGTERM)

    def _signal_all(self, signum: int) -> None:
        for child in self.children:
            if child.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signum)

    def _kill_all(self) -> None:
        for child in self.children:
            if child.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGKILL)

    def _alive(self) -> bool:
        return any(child.pid for child in self.children)

    def _reap(self) -> None:
        for child in self.children:
            if not child.pid:
                continue
            try:
                pid, status = os.waitpid(child.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: gone all the same
                pid, status = child.pid, 0
            if pid == 0:
                continue
            child.pid = 0
            metrics.mark_dead(pid)  # its open-session gauge no longer counts
            sessions, slots = self.share.reset(child.slot)
            ran_for = time.monotonic() - child.started
            if self.stopping is not None:
                log.info(
                    "relay.child_stopped", slot=child.slot, pid=pid, status=exit_status(status)
                )
                continue
            decision = self.policy.after_death(self.streak, ran_for)
            self.streak = decision.streak
            log.error(
                "relay.child_died",
                slot=child.slot,
                pid=pid,
                status=exit_status(status),
                ran_for=round(ran_for, 3),
                restarts=child.restarts,
                restart_in=decision.delay,
                released_sessions=sessions,
                released_delivery_slots=slots,
            )
            if decision.delay is None:
                self.gave_up = GaveUp(
                    f"child processes keep dying: {decision.streak} in a row within"
                    f" {self.policy.healthy_after:g}s of starting (last: pid {pid},"
                    f" {exit_status(status)}); gave up, see the log above"
                )
                log.error("relay.gave_up", streak=decision.streak)
                self._stop_all()
                return
            reclaim(self.settings, pid)  # its deliveries come due now, not a lease later
            child.due = time.monotonic() + decision.delay
            child.restarts += 1

    def _next_timeout(self, now: float) -> float:
        if self.stopping is not None:
            return max(0.0, min(1.0, self.stopping + STOP_GRACE - now))
        due = [child.due for child in self.children if child.due is not None]
        return max(0.0, min([1.0, self.beat_due - now, *(d - now for d in due)]))

    def _start(
        self, child: _Child, parent_only: tuple[socket.socket, socket.socket, int], parent_r: int
    ) -> None:
        child.due = None
        self._disconnect()
        _flush()
        # Signals wait until the child has put its own handlers in place: one that arrived
        # in between would reach the parent's handler, in the child, and be lost.
        signal.pthread_sigmask(signal.SIG_BLOCK, _HANDLED)
        try:
            pid = os.fork()
            if pid == 0:  # pragma: no cover (the child: measured in its own process)
                code = 70
                try:
                    wake_r, wake_w, parent_w = parent_only
                    wake_r.close()
                    wake_w.close()
                    os.close(parent_w)
                    code = self._child_main(child.slot, parent_r)
                finally:
                    _flush()
                    os._exit(code)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _HANDLED)
        child.pid = pid
        child.started = time.monotonic()
        log.info("relay.child_started", slot=child.slot, pid=pid, restarts=child.restarts)

    # --- the child's side ---

    def _child_main(self, slot: int, parent_r: int) -> int:
        """The child's life: `serve` as slot `slot` of the node; its exit code."""
        signal.set_wakeup_fd(-1)
        for sig in _HANDLED:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _HANDLED)
        attach(self.share, slot)
        structlog.contextvars.bind_contextvars(process=slot)
        try:
            run_loop(
                _serve_until_stopped(self.settings, parent_fd=parent_r),
                uvloop=self.settings.run.uvloop,
            )
        except PartDied:
            return 1  # logged by serve as relay.part_died
        except ConfigError as exc:
            print(f"relay: config error: {exc}", file=sys.stderr)
            return 2
        except RelayError as exc:
            print(f"relay: {exc}", file=sys.stderr)
            return 1
        except Exception as exc:
            log.exception("relay.child_crashed", error=f"{type(exc).__name__}: {exc}")
            return 70
        return 0


def _wait(wake: socket.socket, timeout: float) -> None:
    """Until a signal arrives (it writes to `wake`) or `timeout` passes."""
    with contextlib.suppress(InterruptedError):
        select.select([wake], [], [], timeout)
    with contextlib.suppress(BlockingIOError):
        while wake.recv(512):
            pass


def _flush() -> None:
    """Before fork and before os._exit: nothing buffered is written twice or lost."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
