"""The relay side by side with Postfix, on the same machine, load generator and sink.

Three servers per scenario, each given the same load (STARTTLS by default, `--tls`):
  - relay: TLS + AUTH (argon2id), quota at RCPT;
  - postfix+dovecot: what a provider would run: SASL AUTH through Dovecot (argon2id with
    the relay's parameters, auth cache on) over STARTTLS (`smtpd_tls_auth_only`), and a
    policy daemon doing the relay's own quota work (bench.policyd). The ratios are against it;
  - postfix: the second reference, the same without AUTH (the account travels as the sender).

Scenarios (each bounded in count and time, loopback only):
  0. the load straight into the counting sink: the ceiling of this harness on this machine;
  1. accept only: the relay with `delivery.workers = 0` / Postfix parking mail in its hold
     queue;
  2. end to end: quota checks at RCPT, 4 egress IPs, delivery to the sink (50 sessions,
     5 KB by default);
  3. the same with 10,000 accounts (sessions log in as different accounts, few messages
     each: the per-session cost shows);
  4. queue growth: accept only until the queue holds `--queue` messages, the relay's
     memory sampled as it grows.

Reported per run: accepted msgs/s and recipients/s, accept latency p50/p99/max (MAIL FROM to
the 250 after the dot), delivered msgs/s (until the sink has every accepted message), Redis
commands and round trips per accepted and per delivered message, the top commands by name
(bench.redis_cost), server memory (RSS at the end and peak; for Postfix all its processes,
Dovecot's included), and whether every accepted message arrived exactly once at the sink.

    .venv/bin/python -m bench.scenarios [--messages 5000] [--sessions 50] [--queue 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.dovecot import Dovecot, dovecot_binary
from bench.load import LoadResult, LoadSpec, client_context, run
from bench.net import OUT, children, free_port, save_results, stop_process, wait_port
from bench.postfix import Postfix, postfix_binary, pss
from bench.redis_cost import RedisCost, RedisSnapshot, cost, snapshot
from quota import Plan, QuotaStore
from relay.accounts.passwords import hash_password
from relay.embedded_redis import EmbeddedRedis
from relay.redis_client import connect
from relay.sender_auth import Identity
from relay.tls import ensure_self_signed

PASSWORD = "bench-password-1"
EGRESS = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]
HUGE = 10**9
RELAY = "relay"
POSTFIX_DOVECOT = "postfix+dovecot"
POSTFIX = "postfix"
IDLE_WINDOW = 1.0
"""Seconds the relay is watched idle before each run, for its Redis traffic without mail."""
KDF = "argon2id m=19456 KiB, t=2, p=1 (relay.accounts.passwords, OWASP's floor)"


@dataclass
class Row:
    scenario: str
    server: str
    messages: int
    sessions: int
    accepted: int
    accepted_per_s: float
    recipients_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    delivered_per_s: float | None = None
    delivered: int = 0
    """Accepted messages that reached the sink."""
    redis_cmds_per_msg: float | None = None
    """Redis commands per accepted message (Lua-internal ones included)."""
    redis_round_trips_per_msg: float | None = None
    redis_lua_per_msg: float | None = None
    redis_per_accepted: dict[str, Any] = field(default_factory=dict)
    redis_per_delivered: dict[str, Any] = field(default_factory=dict)
    """bench.redis_cost's `per()`: commands, round trips, Lua calls and the top 10 commands
    by name, per message."""
    redis_idle_per_s: dict[str, float] = field(default_factory=dict)
    """Commands and round trips per second of the relay before the load (no mail)."""
    cpu_ms_per_msg: float | None = None
    """CPU of the server per accepted message (Postfix: all its processes and the policy
    daemon), excluding Redis."""
    redis_cpu_ms_per_msg: float | None = None
    rss_mb: float | None = None
    peak_rss_mb: float | None = None
    logins: int = 0
    exactly_once: str = "-"
    refusals: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    note: str = ""
    redis_stalls: str = ""
    """Redis's own latency events over 50 ms during the run (LATENCY LATEST)."""


def peers_dir() -> Path:
    """Where Postfix and Dovecot run: their own users (postfix, dovecot) must reach it, and
    the relay keeps its var/ private (0700), so not under var/bench/."""
    folder = Path(tempfile.gettempdir()) / "relay-bench-peers"
    folder.mkdir(exist_ok=True)
    folder.chmod(0o755)
    return folder


def memory(*pids: int) -> tuple[float, float]:
    """(RSS, peak RSS) of processes in MB, added up (the peaks: each process's own)."""
    rss = peak = 0.0
    for pid in pids:
        fields = {}
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                name, _, value = line.partition(":")
                fields[name] = value
        rss += int(fields.get("VmRSS", "0 kB").split()[0]) / 1024
        peak += int(fields.get("VmHWM", "0 kB").split()[0]) / 1024
    return round(rss, 1), round(peak, 1)


def cpu_seconds(pid: int, *, reaped: bool = False) -> float:
    """User + system CPU of a process (all threads); with `reaped`, plus its waited-for
    children's (how Postfix's short-lived smtpd processes are counted by their master)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if reaped:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


class SinkProcess:
    """bench.sink in a child process (so the counting does not share our event loop)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.sink",
            "--port",
            str(self.port),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), 20)
        assert line.strip() == b"ready", line

    async def ask(self, command: str) -> dict[str, Any]:
        assert self.process is not None and self.process.stdin and self.process.stdout
        self.process.stdin.write(command.encode() + b"\n")
        await self.process.stdin.drain()
        result: dict[str, Any] = json.loads(await self.process.stdout.readline())
        return result

    async def wait_for(self, ids: set[str], within: float) -> tuple[dict[str, Any], float]:
        """Poll until every id arrived (or `within` passed); (stats, when)."""
        deadline = time.monotonic() + within
        while True:
            stats = await self.ask("stats")
            if ids <= stats["ids"].keys() or time.monotonic() > deadline:
                return stats, time.monotonic()
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            await self.process.wait()


def exactly_once(acked: set[str], stats: dict[str, Any]) -> str:
    seen: dict[str, int] = stats["ids"]
    missing = len(acked - seen.keys())
    twice = sum(1 for i in acked if seen.get(i, 0) > 1)
    extra = len(seen.keys() - acked)  # arrived without a 250 (e.g. reply lost): allowed
    if not missing and not twice:
        return f"ok ({len(acked)})" + (f", {extra} unacked also came" if extra else "")
    return f"MISSING {missing}, TWICE {twice} of {len(acked)}"


def relay_toml(
    *,
    redis: str,
    cert: Path,
    key: Path,
    port: int,
    tls: str,
    max_per_ip: int,
    workers: int,
    egress: Sequence[str],
    sink_port: int,
    extra: str = "",
) -> str:
    """A bench relay's config: one listener, every domain to the counting sink; `redis`:
    the lines of its [redis] section; `extra`: more sections."""
    return (
        f'hostname = "relay.bench"\n{extra}[redis]\n{redis}\n'
        f'[tls]\ncert = "{cert}"\nkey = "{key}"\n'
        f"[submission]\nmax_connections_per_ip = {max_per_ip}\n"
        f'[[submission.listeners]]\naddress = "127.0.0.1:{port}"\ntls = "{tls}"\n'
        f'[delivery]\nworkers = {workers}\npoll_interval = "100ms"\n'
        + "".join(f'[[delivery.egress]]\nip = "{ip}"\nhelo = "out.bench"\n' for ip in egress)
        + f'[delivery.routes]\n"*" = "127.0.0.1:{sink_port}"\n'
        + '[log]\nlevel = "warning"\nformat = "json"\n'
    )


class Bench:
    def __init__(self, work: Path, options: argparse.Namespace) -> None:
        self.work = work
        self.options = options
        self.redis_server = EmbeddedRedis(work / "redis", port=free_port())
        self.cert, self.key = work / "cert.pem", work / "key.pem"
        self.sink = SinkProcess(free_port())
        self.rows: list[Row] = []
        self.postfix_note = ""
        # The relay's own hash function and parameters: Dovecot gets the same hashes.
        self.password_hash = hash_password(PASSWORD)
        self.logins: list[str] = []
        self.dovecot_notes: list[str] = []

    # --- setup ---

    async def setup(self, accounts: int) -> None:
        self.redis_server.start()
        ensure_self_signed(self.cert, self.key, "relay.bench")
        self.tls = client_context(str(self.cert))
        await self.sink.start()
        self.redis = connect(self.redis_server.url, timeout=10)
        # Redis records its own stalls over 50 ms (fsync, fork, slow commands) per run.
        await self.redis.config_set("latency-monitor-threshold", 50)
        await self.provision(["bench"])
        if accounts:
            await self.provision([f"acct{n:05d}" for n in range(accounts)])

    async def provision(self, logins: list[str]) -> None:
        """Accounts with one password hash (argon2id, as `relay account add` makes) and a
        plan large enough that the quota never refuses, written in bulk."""
        password_hash = self.password_hash
        self.logins += logins
        quota = QuotaStore(self.redis, default_per_minute=HUGE, per_recipient=HUGE)
        now = time.time()
        for start in range(0, len(logins), 500):
            batch = logins[start : start + 500]
            async with self.redis.pipeline(transaction=False) as pipe:
                for login in batch:
                    pipe.hset(
                        f"acct:{{{login}}}",
                        mapping={
                            "login": login,
                            "email": "",
                            "created_at": repr(time.time()),
                            "password": password_hash,
                        },
                    )
                    pipe.sadd("accounts", login)
                    # the one sender it uses (bench/load.py): a verified identity, as
                    # `relay domain add LOGIN LOGIN@load.bench --verified` makes
                    address = f"{login}@load.bench"
                    identity = Identity(address, login, "bench", now, now, "operator")
                    pipe.hset(f"ident:{{{login}}}", address, identity.to_json())
                    pipe.hset("identities", address, login)
                await pipe.execute()
            await asyncio.gather(
                *(
                    quota.add_plan(login, Plan("bench", daily=HUGE, per_minute=HUGE))
                    for login in batch
                )
            )

    async def queued(self) -> int:
        """Messages in the queues of all nodes."""
        keys = [key async for key in self.redis.scan_iter(match="{q:*}:messages")]
        return sum([int(await self.redis.zcard(key)) for key in keys])

    async def clear_queue(self) -> None:
        async for key in self.redis.scan_iter(match="{q:*", count=5000):
            await self.redis.unlink(key)

    async def redis_stalls(self) -> str:
        """Redis's latency events since the last call (then forgotten)."""
        events = await self.redis.execute_command("LATENCY", "LATEST")  # type: ignore[no-untyped-call]
        await self.redis.execute_command("LATENCY", "RESET")  # type: ignore[no-untyped-call]
        return ", ".join(
            f"{name.decode() if isinstance(name, bytes) else name} max {int(worst)} ms"
            for name, _, _, worst, *_ in events
        )

    async def redis_counts(self) -> RedisSnapshot:
        return await snapshot(self.redis)

    # --- the relay ---

    def relay_config(self, port: int, workers: int, sessions: int) -> Path:
        config = self.work / f"relay-{port}.toml"
        config.write_text(
            relay_toml(
                redis=f'url = "{self.redis_server.url}"',
                cert=self.cert,
                key=self.key,
                port=port,
                tls=self.options.tls,
                max_per_ip=sessions + 10,
                workers=workers,
                egress=EGRESS,
                sink_port=self.sink.port,
            )
        )
        return config

    @contextlib.asynccontextmanager
    async def relay(  # type: ignore[no-untyped-def]
        self, workers: int, sessions: int, env: dict[str, str] | None = None
    ):
        port = free_port()
        config = self.relay_config(port, workers, sessions)
        log = open(self.work / f"relay-{port}.log", "wb")  # noqa: SIM115, ASYNC230
        command = [sys.executable, "-m", "relay", "--config", str(config), "run"]
        if self.options.profile:
            command = [
                str(Path(sys.executable).parent / "py-spy"),
                "record",
                "--format",
                "raw",
                "--rate",
                "200",
                "--subprocesses",
                "-o",
                str(OUT / f"profile-relay-{'e2e' if workers else 'accept'}.txt"),
                "--",
                *command,
            ]
        process = await asyncio.create_subprocess_exec(
            *command, stdout=log, stderr=log, env={**os.environ, **(env or {})}
        )
        try:
            await wait_port(port)
            await asyncio.sleep(0.5)  # every process of the node listening, not only the first
            yield process, port
        finally:
            if process.returncode is None:
                # Under py-spy, stop the relay itself: py-spy writes its profile when it ends.
                await stop_process(process, relay_pid(process))
            log.close()

    async def run_relay(
        self,
        scenario: str,
        spec: LoadSpec,
        *,
        deliver: bool,
        relay_pid_hint: str = "",
        variant: tuple[str, dict[str, str]] = ("", {}),
    ) -> Row:
        await self.clear_queue()
        await self.sink.ask("reset")
        count = self.options.relay_processes
        async with contextlib.AsyncExitStack() as stack:
            relays = [
                await stack.enter_async_context(
                    self.relay(32 if deliver else 0, spec.sessions, variant[1])
                )
                for _ in range(count)
            ]
            ports = [port for _, port in relays]
            pids = [pid for process, _ in relays for pid in relay_pids(process)]
            # What the relay asks of Redis with no mail at all (polling, heartbeats): per
            # second, so that the per-message counts below can be read net of it.
            idle_from = await self.redis_counts()
            await asyncio.sleep(IDLE_WINDOW)
            idle = cost(idle_from, await self.redis_counts())
            cpu_before = sum(cpu_seconds(pid) for pid in pids)
            await self.redis_stalls()
            before = await self.redis_counts()
            spec = replace(replace_port(spec, ports[0]), more_ports=tuple(ports[1:]))
            result = await run(spec, self.tls)
            delivered_at = None
            stats: dict[str, Any] = {}
            if deliver:
                stats, delivered_at = await self.sink.wait_for(set(result.acked), 300)
            after = await self.redis_counts()
            cpu = sum(cpu_seconds(pid) for pid in pids) - cpu_before
            stalls = await self.redis_stalls()
            used = [memory(pid) for pid in pids]
            rss, peak = round(sum(u[0] for u in used), 1), round(sum(u[1] for u in used), 1)
        server = RELAY if count == 1 else f"{RELAY} x{count}"
        server += f" {variant[0]}" if variant[0] else ""
        row = self.row(
            scenario, server, spec, result, delivered_at, stats, cost(before, after), rss, peak
        )
        if row.accepted:
            row.cpu_ms_per_msg = round(1000 * cpu / row.accepted, 2)
        row.redis_stalls = stalls
        row.redis_idle_per_s = {
            "commands": round(idle.commands / IDLE_WINDOW, 1),
            "round_trips": round(idle.round_trips / IDLE_WINDOW, 1),
        }
        return row

    # --- Postfix, with or without Dovecot ---

    @contextlib.asynccontextmanager
    async def postfix(self, *, hold: bool, sessions: int, sasl: bool):  # type: ignore[no-untyped-def]
        policy_port = free_port()
        policyd = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.policyd",
            "--port",
            str(policy_port),
            "--redis",
            self.redis_server.url,
        )
        instance = Postfix(
            peers_dir() / ("postfix-dovecot" if sasl else "postfix"),
            port=free_port(),
            sink_port=self.sink.port,
            cert=self.cert,
            key=self.key,
            policy_port=policy_port,
            hold=hold,
            processes=max(100, sessions + 20),
            tls=self.options.tls,
            sasl=sasl,
        )
        dovecot = None
        if sasl:
            dovecot = Dovecot(
                peers_dir() / "dovecot",
                socket=instance.sasl_socket,
                users=[(login, self.password_hash) for login in self.logins],
                cache_size="10M",
            )
        try:
            await wait_port(policy_port)
            await asyncio.to_thread(instance.start)  # first: it makes private/ its own
            if dovecot is not None:
                await asyncio.to_thread(dovecot.start)
            yield instance, policyd.pid, dovecot
        finally:
            await asyncio.to_thread(instance.stop)
            if dovecot is not None:
                await asyncio.to_thread(dovecot.stop)
            policyd.terminate()
            await policyd.wait()

    async def run_postfix(self, scenario: str, spec: LoadSpec, *, deliver: bool, sasl: bool) -> Row:
        await self.sink.ask("reset")
        async with self.postfix(hold=not deliver, sessions=spec.sessions, sasl=sasl) as (
            instance,
            policyd,
            dovecot,
        ):
            cpu_before = postfix_cpu(instance, policyd, dovecot)
            await self.redis_stalls()
            before = await self.redis_counts()
            # Without SASL the account travels as the sender (see bench.policyd).
            result = await run(replace_port(spec, instance.port, auth=sasl), self.tls)
            delivered_at = None
            stats: dict[str, Any] = {}
            if deliver:
                stats, delivered_at = await self.sink.wait_for(set(result.acked), 300)
            after = await self.redis_counts()
            cpu = postfix_cpu(instance, policyd, dovecot) - cpu_before
            stalls = await self.redis_stalls()
            used = instance.memory()
            # smtpd exits when Dovecot's auth process, busy with argon2, leaves its handshake
            # unanswered for 10 s (Postfix's AUTH_TIMEOUT): the sessions it had are lost.
            no_sasl = instance.log_count("no SASL authentication mechanisms")
            cache = None
            if dovecot is not None:
                used += sum(pss(pid) for pid in dovecot.pids())
                cache = await asyncio.to_thread(dovecot.cache_stats)
        row = self.row(
            scenario,
            POSTFIX_DOVECOT if sasl else POSTFIX,
            spec,
            result,
            delivered_at,
            stats,
            cost(before, after),
            round(used / 2**20, 1),
            None,
        )
        if row.accepted:
            row.cpu_ms_per_msg = round(1000 * cpu / row.accepted, 2)
        row.redis_stalls = stalls
        if sasl:
            row.note = (
                f"SASL AUTH via Dovecot (passwd-file, {KDF}; auth_cache_size 10M:"
                f" {cache or 'auth cache counters not reported'});"
                " policy daemon for quota"
            )
            note = f"{scenario}: {row.logins} logins, {cache or 'cache counters: ?'}"
            if no_sasl:
                note += (
                    f"; {no_sasl} smtpd processes exited waiting over 10 s for Dovecot's"
                    " handshake (fatal: no SASL authentication mechanisms)"
                )
            self.dovecot_notes.append(note)
        else:
            row.note = "no AUTH (the second reference); policy daemon for quota"
        return row

    def row(
        self,
        scenario: str,
        server: str,
        spec: LoadSpec,
        result: LoadResult,
        delivered_at: float | None,
        stats: dict[str, Any],
        spent: RedisCost | None,
        rss: float | None,
        peak: float | None,
    ) -> Row:
        accepted = len(result.acked)
        seconds = max(result.seconds, 1e-9)
        row = Row(
            scenario=scenario,
            server=server,
            messages=spec.messages,
            sessions=spec.sessions,
            accepted=accepted,
            accepted_per_s=round(accepted / seconds, 1),
            recipients_per_s=round(result.recipients_acked / seconds, 1),
            p50_ms=round(result.percentile(0.5) * 1000, 1),
            p99_ms=round(result.percentile(0.99) * 1000, 1),
            max_ms=round(max(result.latencies, default=float("nan")) * 1000, 1),
            logins=result.logins,
            refusals=dict(result.refusals),
            errors=dict(result.errors),
            rss_mb=rss,
            peak_rss_mb=peak,
        )
        if delivered_at is not None:
            row.delivered_per_s = round(accepted / (delivered_at - result.started), 1)
            row.exactly_once = exactly_once(set(result.acked), stats)
            row.delivered = len(set(result.acked) & stats["ids"].keys())
        if accepted and spent is not None:
            row.redis_per_accepted = spent.per(accepted)
            row.redis_per_delivered = spent.per(row.delivered)
            row.redis_cmds_per_msg = row.redis_per_accepted["commands"]
            row.redis_round_trips_per_msg = row.redis_per_accepted["round_trips"]
            row.redis_lua_per_msg = row.redis_per_accepted["lua_calls"]
            row.redis_cpu_ms_per_msg = round(1000 * spent.cpu / accepted, 2)
        return row

    async def baseline(self, spec: LoadSpec) -> Row:
        await self.sink.ask("reset")
        result = await run(replace_port(spec, self.sink.port, tls="plain", auth=False), None)
        stats, delivered_at = await self.sink.wait_for(set(result.acked), 60)
        row = self.row(
            "0 load -> sink", "sink", spec, result, delivered_at, stats, None, None, None
        )
        row.note = "harness ceiling: plain SMTP, no TLS, no AUTH"
        return row

    async def queue_growth(self, total: int, sessions: int) -> dict[str, Any]:
        """Accept only until the queue holds `total`; the relay's RSS at each tenth."""
        await self.clear_queue()
        samples = []
        step = max(1, total // 10)
        accepted = 0
        started = time.monotonic()
        async with self.relay(0, sessions) as (process, port):
            pids = relay_pids(process)
            samples.append({"queued": 0, "rss_mb": memory(*pids)[0]})
            for first in range(0, total, step):
                spec = LoadSpec(
                    port=port,
                    messages=min(step, total - first),
                    sessions=sessions,
                    per_session=50,
                    accounts=[("bench", PASSWORD)],
                    first_id=first,
                    tls=self.options.tls,
                    size=self.options.size,
                )
                result = await run(spec, self.tls)
                accepted += len(result.acked)
                queued = await self.queued()
                samples.append({"queued": queued, "rss_mb": memory(*pids)[0]})
                print(f"  queue growth: {queued} queued, relay RSS {samples[-1]['rss_mb']} MB")
            peak = memory(*pids)[1]
            seconds = time.monotonic() - started
        used = await self.redis.info("memory")
        await self.clear_queue()
        return {
            "accepted": accepted,
            "accepted_per_s": round(accepted / seconds, 1),
            "samples": samples,
            "relay_peak_rss_mb": peak,
            "redis_used_memory_mb": round(int(used["used_memory"]) / 2**20, 1),
        }


def postfix_cpu(instance: Postfix, policyd: int, dovecot: Dovecot | None = None) -> float:
    """CPU seconds of Postfix (master, live and reaped children), the policy daemon and
    Dovecot (its auth process verifies the passwords)."""
    used = cpu_seconds(policyd)
    for master in (instance.master_pid(), *(dovecot.pids()[:1] if dovecot else ())):
        if master is not None:
            live = sum(cpu_seconds(child) for child in children(master))
            used += cpu_seconds(master, reaped=True) + live
    return used


def replace_port(
    spec: LoadSpec, port: int, *, tls: str | None = None, auth: bool = True
) -> LoadSpec:
    return replace(
        spec,
        port=port,
        tls=tls or spec.tls,  # type: ignore[arg-type]
        accounts=spec.accounts,
        auth=auth and spec.auth,
    )


def relay_pids(process: asyncio.subprocess.Process) -> list[int]:
    """The relay and, under `relay run --processes N`, the children of its supervisor."""
    pid = relay_pid(process)
    return [pid, *children(pid)]


def relay_pid(process: asyncio.subprocess.Process) -> int:
    """The relay's own pid (under py-spy it is a child of the profiler; without it, the
    children are those of `relay run`'s supervisor)."""
    with contextlib.suppress(OSError):
        program = Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0")[0]
        if not program.endswith(b"py-spy"):
            return process.pid
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
    with contextlib.suppress(OSError):
        kids = children.read_text().split()
        if kids:
            return int(kids[0])
    return process.pid


def ratio(ours: float | None, theirs: float | None) -> float | None:
    if not ours or not theirs or math.isnan(ours) or math.isnan(theirs):
        return None
    return round(ours / theirs, 2)


def ratios_against(ours: Row, theirs: Row) -> dict[str, float | None]:
    """relay / reference: above 1 is better for rates, below 1 for latencies and CPU."""
    return {
        "delivered": ratio(ours.delivered_per_s, theirs.delivered_per_s),
        "accepted": ratio(ours.accepted_per_s, theirs.accepted_per_s),
        "p50": ratio(ours.p50_ms, theirs.p50_ms),
        "p99": ratio(ours.p99_ms, theirs.p99_ms),
        "cpu/msg": ratio(ours.cpu_ms_per_msg, theirs.cpu_ms_per_msg),
    }


def scenario_ratios(rows: list[Row]) -> dict[str, dict[str, dict[str, float | None]]]:
    """Per scenario, the relay against each reference that ran: Postfix+Dovecot (the fair
    one) and Postfix without AUTH."""
    found: dict[str, dict[str, dict[str, float | None]]] = {}
    for scenario in dict.fromkeys(r.scenario for r in rows):
        ours = next(
            (r for r in rows if r.scenario == scenario and r.server.startswith(RELAY)), None
        )
        if ours is None:
            continue
        for reference in (POSTFIX_DOVECOT, POSTFIX):
            theirs = next(
                (r for r in rows if r.scenario == scenario and r.server == reference), None
            )
            if theirs is not None:
                found.setdefault(scenario, {})[reference] = ratios_against(ours, theirs)
    return found


def delivery_estimate(rows: list[Row]) -> dict[str, float] | None:
    """Redis cost of delivering a message: end to end per delivered message less accept only
    per accepted message (same load: sessions, size, messages per session)."""
    relay = [r for r in rows if r.server.startswith(RELAY)]
    accept = next((r for r in relay if r.scenario.startswith("1 accept only")), None)
    e2e = next((r for r in relay if r.scenario.startswith("2 ")), None)
    if accept is None or e2e is None:
        return None
    sub, both = accept.redis_per_accepted, e2e.redis_per_delivered
    if not sub.get("messages") or not both.get("messages"):
        return None
    return {
        "commands": round(both["commands"] - sub["commands"], 2),
        "round_trips": round(both["round_trips"] - sub["round_trips"], 2),
    }


def report(
    rows: list[Row],
    growth: dict[str, Any] | None,
    postfix_note: str,
    dovecot_notes: list[str],
    options: argparse.Namespace,
) -> Path:
    header = (
        f"{'scenario':<24} {'server':<15} {'acc/s':>6} {'rcpt/s':>6} {'dlv/s':>6} {'p50':>6}"
        f" {'p99':>7} {'max':>7} {'cpu/m':>6} {'rcpu/m':>6} {'cmd/m':>6} {'rt/m':>5}"
        f" {'lua/m':>5} {'MB':>6} {'logins':>6}"
        "  exactly once"
    )
    print()
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r.scenario:<24} {r.server:<15} {r.accepted_per_s:>6.0f} {r.recipients_per_s:>6.0f}"
            f" {cell(r.delivered_per_s, 0):>6} {r.p50_ms:>6.1f} {r.p99_ms:>7.1f} {r.max_ms:>7.1f}"
            f" {cell(r.cpu_ms_per_msg, 2):>6} {cell(r.redis_cpu_ms_per_msg, 2):>6}"
            f" {cell(r.redis_cmds_per_msg, 1):>6} {cell(r.redis_round_trips_per_msg, 1):>5}"
            f" {cell(r.redis_lua_per_msg, 1):>5} {cell(r.rss_mb, 0):>6} {r.logins:>6}"
            f"  {r.exactly_once}"
        )
        if r.refusals or r.errors:
            print(f"{'':<24} ! refusals {r.refusals} errors {r.errors}")
        if r.redis_stalls:
            print(f"{'':<24} ! Redis stalled: {r.redis_stalls}")
    print(
        f"(TLS: {options.tls} for every server; {options.size} B messages; latencies in ms:"
        " MAIL FROM to the 250 after DATA;\n cpu/m: server CPU ms per accepted message (Postfix:"
        " all its processes, Dovecot's and the policy daemon's);\n rcpu/m: Redis CPU ms per"
        " message; cmd/m: Redis commands per accepted message, Lua-internal included; rt/m:\n"
        " Redis round trips per accepted message; lua/m: script calls (Postfix rows: those of"
        " its quota policy\n daemon); MB: RSS of the relay process(es), PSS summed over all"
        " Postfix (+Dovecot) processes.\n postfix+dovecot: SASL AUTH through Dovecot; postfix:"
        " no AUTH; both with the quota policy daemon)"
    )
    ratios = scenario_ratios(rows)
    if ratios:
        print(
            f"\nrelay / {POSTFIX_DOVECOT} (relay / {POSTFIX} without AUTH, the second reference):"
        )
        print(
            f"  {'scenario':<24} {'delivered/s':>14} {'accepted/s':>14} {'p50':>14} {'p99':>14}"
            f" {'cpu/msg':>14}"
        )
        for scenario, against in ratios.items():
            fair, plain = against.get(POSTFIX_DOVECOT, {}), against.get(POSTFIX, {})
            cells = [
                f"{times(fair.get(k))} ({times(plain.get(k))})"
                for k in ("delivered", "accepted", "p50", "p99", "cpu/msg")
            ]
            print(f"  {scenario:<24} " + " ".join(f"{c:>14}" for c in cells))
        print("  (rates: above 1x the relay is faster; p50, p99, cpu/msg: below 1x it is)")
    if dovecot_notes:
        print(
            f"\nDovecot: passwd-file, {KDF}, auth_cache_size 10M. Dovecot caches only passdbs"
            " with a cache key\n (SQL, LDAP), and a cache hit verifies the cached hash again:"
            " every login pays argon2id in its\n single auth process. Its cache counters"
            " (SIGUSR2) and logins per run:"
        )
        for note in dovecot_notes:
            print(f"  {note}")
    costs = redis_costs(rows)
    if costs:
        print(
            "\nRedis per message, relay (commands: every command Redis ran, those inside Lua"
            " included;\n round trips: requests Redis answered, a pipeline, MULTI/EXEC or"
            " script counting once):"
        )
        for scenario, per in costs.items():
            accepted, delivered = per["per_accepted"], per["per_delivered"]
            line = (
                f"  {scenario:<24} per accepted: {accepted['commands']} commands,"
                f" {accepted['round_trips']} round trips"
            )
            if delivered.get("messages"):
                line += (
                    f"; per delivered: {delivered['commands']} commands,"
                    f" {delivered['round_trips']} round trips"
                )
            idle = per["idle_per_s"]
            if idle:
                line += f" (idle: {idle['commands']} commands/s, {idle['round_trips']} rt/s)"
            print(line)
            top = ", ".join(f"{k} {v}" for k, v in accepted["by_command"].items())
            print(f"  {'':<24} top per accepted: {top}")
        estimate = delivery_estimate(rows)
        if estimate:
            print(
                f"  delivery alone (scenario 2 per delivered - scenario 1 per accepted):"
                f" {estimate['commands']} commands, {estimate['round_trips']} round trips"
            )
    if postfix_note:
        print(f"\n{postfix_note}")
    if growth:
        series = ", ".join(f"{s['queued']}: {s['rss_mb']:.0f}" for s in growth["samples"])
        print(f"\nqueue growth, relay RSS MB by queued messages: {series}")
        print(
            f"  {growth['accepted']} accepted at {growth['accepted_per_s']:.0f}/s;"
            f" relay peak RSS {growth['relay_peak_rss_mb']:.0f} MB;"
            f" Redis used_memory at the end {growth['redis_used_memory_mb']:.0f} MB"
        )
    print()
    return save_results(
        "side-by-side",
        {
            "options": vars(options),
            "load": os.getloadavg(),
            "rows": [asdict(r) for r in rows],
            "ratios": ratios,
            "redis_per_message": costs,
            "redis_delivery_estimate": delivery_estimate(rows),
            "dovecot": {"kdf": KDF, "auth_cache_size": "10M", "runs": dovecot_notes},
            "postfix": postfix_note or "ran",
            "queue_growth": growth,
        },
    )


def redis_costs(rows: list[Row]) -> dict[str, dict[str, Any]]:
    return {
        r.scenario: {
            "per_accepted": r.redis_per_accepted,
            "per_delivered": r.redis_per_delivered,
            "idle_per_s": r.redis_idle_per_s,
        }
        for r in rows
        if r.server.startswith(RELAY) and r.redis_per_accepted
    }


def cell(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


async def main(options: argparse.Namespace) -> None:
    work = (OUT / f"run-{time.strftime('%Y%m%dT%H%M%S')}").resolve()
    work.mkdir(parents=True, exist_ok=True)
    bench = Bench(work, options)
    references = [name for name in options.references.split(",") if name]
    with_postfix = postfix_binary() is not None and not options.no_postfix
    postfix_note = (
        ""
        if with_postfix
        else (
            "Postfix: not run ("
            + ("--no-postfix" if options.no_postfix else "not installed, or not root")
            + "): our numbers only"
        )
    )
    if with_postfix and POSTFIX_DOVECOT in references and dovecot_binary() is None:
        references.remove(POSTFIX_DOVECOT)
        postfix_note = "Dovecot: not installed, or not root: no postfix+dovecot rows"
    if not with_postfix:
        references = []
    scenarios = set(options.scenarios.split(","))
    rows: list[Row] = []
    growth = None
    try:
        await bench.setup(options.accounts if "3" in scenarios else 0)
        base = LoadSpec(
            port=0,
            messages=options.messages,
            sessions=options.sessions,
            size=options.size,
            recipients=options.recipients,
            per_session=options.per_session,
            accounts=[("bench", PASSWORD)],
            tls=options.tls,
        )
        many = [(f"acct{n:05d}", PASSWORD) for n in range(options.accounts)]
        plan: list[tuple[str, LoadSpec, bool]] = []
        if "1" in scenarios:
            plan.append(("1 accept only", base, False))
            if options.rate:
                # One login per session, done before the clock starts: the latency of
                # accepting, at a rate below capacity (10 s of it at most).
                paced_count = min(options.messages, int(10 * options.rate))
                paced = LoadSpec(
                    **{
                        **asdict(base),
                        "rate": options.rate,
                        "warmup": True,
                        "messages": paced_count,
                        "per_session": -(-paced_count // options.sessions),
                    }
                )
                plan.append((f"1 accept, {options.rate:g}/s offered", paced, False))
        if "2" in scenarios:
            plan.append(("2 end to end, 4 IPs", base, True))
        if "3" in scenarios:
            spec3 = LoadSpec(
                **{
                    **asdict(base),
                    "messages": options.messages_many,
                    "per_session": options.per_session_many,
                    "accounts": many,
                }
            )
            plan.append((f"3 e2e, {options.accounts} accts", spec3, True))
        if "5" in scenarios:
            # Large mail at once: the bodies must stream to disk, not through memory.
            big = LoadSpec(
                **{
                    **asdict(base),
                    "messages": options.big_messages,
                    "sessions": options.big_messages,
                    "per_session": 1,
                    "size": options.big_size,
                    "timeout": 300.0,
                }
            )
            plan.append(
                (f"5 {options.big_messages} x {options.big_size // 1_000_000} MB", big, True)
            )
        if "0" in scenarios:
            rows.append(await bench.baseline(base))
            print_row(rows[-1])
        for name, spec, deliver in plan:
            for variant in options.variant or [("", {})]:
                rows.append(await bench.run_relay(name, spec, deliver=deliver, variant=variant))
                print_row(rows[-1])
            for reference in list(references):
                try:
                    rows.append(
                        await bench.run_postfix(
                            name, spec, deliver=deliver, sasl=reference == POSTFIX_DOVECOT
                        )
                    )
                    print_row(rows[-1])
                except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                    postfix_note = f"{reference} could not run: {exc}; no more of its rows"
                    print(postfix_note)
                    references.remove(reference)
        if "4" in scenarios and options.queue:
            growth = await bench.queue_growth(options.queue, options.sessions)
    finally:
        await bench.sink.stop()
        with contextlib.suppress(Exception):
            await bench.redis.aclose()
        bench.redis_server.stop()
        shutil.rmtree(work / "redis", ignore_errors=True)  # the AOF of every message sent
    report(rows, growth, postfix_note, bench.dovecot_notes, options)


def variant(text: str) -> tuple[str, dict[str, str]]:
    name, _, assignments = text.partition(":")
    env = dict(item.split("=", 1) for item in assignments.split(",") if "=" in item)
    return name, env


def print_row(row: Row) -> None:
    dlv = f", delivered {row.delivered_per_s}/s" if row.delivered_per_s is not None else ""
    print(
        f"  {row.scenario} [{row.server}]: {row.accepted} accepted, {row.accepted_per_s}/s{dlv},"
        f" p50 {row.p50_ms} ms, p99 {row.p99_ms} ms, exactly once: {row.exactly_once}",
        flush=True,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--size", type=int, default=5000, help="bytes per message")
    parser.add_argument(
        "--tls", choices=["starttls", "implicit"], default="starttls", help="for every server"
    )
    parser.add_argument("--recipients", type=int, default=1)
    parser.add_argument("--per-session", type=int, default=20)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--messages-many", type=int, default=1000, help="scenario 3")
    parser.add_argument("--per-session-many", type=int, default=2, help="scenario 3")
    parser.add_argument("--queue", type=int, default=20_000, help="scenario 4; 0: skip")
    parser.add_argument(
        "--rate", type=float, default=150.0, help="scenario 1 again at this offered msgs/s"
    )
    parser.add_argument("--scenarios", default="0,1,2,3,4,5")
    parser.add_argument("--big-messages", type=int, default=40, help="scenario 5: at once")
    parser.add_argument("--big-size", type=int, default=20_000_000, help="scenario 5: bytes")
    parser.add_argument("--no-postfix", action="store_true")
    parser.add_argument(
        "--references",
        default=f"{POSTFIX_DOVECOT},{POSTFIX}",
        help=f"Postfix rows to run: {POSTFIX_DOVECOT} (SASL AUTH via Dovecot), {POSTFIX} (no AUTH)",
    )
    parser.add_argument(
        "--relay-processes",
        type=int,
        default=1,
        help="run N relay processes on one Redis, sessions spread over them",
    )
    parser.add_argument(
        "--variant",
        action="append",
        type=variant,
        metavar="NAME:VAR=VALUE[,VAR=VALUE]",
        help="run each relay scenario once per variant, in the same run, with these"
        " environment overrides (e.g. p1:RELAY_RUN__PROCESSES=1 p2:RELAY_RUN__PROCESSES=2);"
        " default: one run with the relay's defaults",
    )
    parser.add_argument("--profile", action="store_true", help="py-spy the relay (in .venv)")
    options = parser.parse_args()
    options.messages = min(options.messages, 100_000)
    options.messages_many = min(options.messages_many, 100_000)
    options.sessions = min(options.sessions, 500)
    options.queue = min(options.queue, 200_000)
    options.accounts = min(options.accounts, 100_000)
    asyncio.run(main(options))
