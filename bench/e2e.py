"""Whole-path throughput: N messages over C concurrent authenticated TLS sessions.

Baseline, in the same run: the same load sent straight to the same sink (plain SMTP, no
relay). The ratio relay/baseline is what to compare across machines; absolute numbers on a
shared 2-core machine are noisy. Loopback only; bounded in count and time.

Delivery only: N messages put straight into the queue of a running relay, delivered from 4
egress IPs to the sink; once with sessions reused (several messages per SMTP session), once
with a new session per message.

    .venv/bin/python -m bench.e2e [--messages 1000] [--sessions 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import ssl
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import aiosmtplib

from bench.net import free_port, save_results, wait_port
from quota import QuotaStore
from relay.accounts import AccountStore
from relay.accounts.provisioning import create_account
from relay.clock import SystemClock
from relay.embedded_redis import EmbeddedRedis
from relay.queue import Envelope, QueueStore
from relay.redis_client import connect
from relay.sender_auth import IdentityStore
from relay.spool import Spool
from relay.tls import ensure_self_signed

PASSWORD = "bench-password-1"
BODY = b"Subject: bench\r\nFrom: bench@example.org\r\n\r\n" + (b"x" * 76 + b"\r\n") * 25


@dataclass
class Result:
    scenario: str
    messages: int
    sessions: int
    seconds: float
    accepted_per_s: float
    delivered_per_s: float
    accept_p50_ms: float
    accept_p99_ms: float


async def spawn(*args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "relay",
        *args,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def load(
    port: int, *, messages: int, sessions: int, tls: ssl.SSLContext | None, login: bool
) -> list[float]:
    """Send `messages` split over `sessions` connections; returns per-message latencies."""
    latencies: list[float] = []
    per_session = [messages // sessions + (i < messages % sessions) for i in range(sessions)]

    async def session(count: int, n: int) -> None:
        async with aiosmtplib.SMTP(
            hostname="127.0.0.1",
            port=port,
            use_tls=tls is not None,
            tls_context=tls,
            start_tls=False,
            timeout=60,
        ) as smtp:
            if login:
                await smtp.login("bench", PASSWORD)
            for i in range(count):
                started = time.perf_counter()
                await smtp.sendmail("bench@example.org", [f"r{n}-{i}@example.com"], BODY)
                latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(session(c, n) for n, c in enumerate(per_session)))
    return latencies


async def wait_files(directory: Path, count: int, within: float) -> float:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if _count_files(directory) >= count:
            return time.monotonic()
        await asyncio.sleep(0.02)
    raise TimeoutError(f"only {_count_files(directory)} of {count} arrived in {within}s")


def _count_files(directory: Path) -> int:
    try:
        return len(os.listdir(directory))
    except FileNotFoundError:
        return 0


def result(
    name: str, n: int, c: int, started: float, accepted: float, done: float, latencies: list[float]
) -> Result:
    ordered = sorted(latencies)
    return Result(
        scenario=name,
        messages=n,
        sessions=c,
        seconds=round(done - started, 3),
        accepted_per_s=round(n / (accepted - started), 1),
        delivered_per_s=round(n / (done - started), 1),
        accept_p50_ms=round(statistics.median(ordered) * 1000, 2),
        accept_p99_ms=round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
    )


async def main(messages: int, sessions: int) -> list[Result]:
    work = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    redis_server = EmbeddedRedis(work / "redis", port=free_port())
    redis_server.start()
    cert, key = work / "cert.pem", work / "key.pem"
    ensure_self_signed(cert, key, "relay.bench")
    client_tls = ssl.create_default_context(cafile=str(cert))
    sink_port, submit_port = free_port(), free_port()
    config = work / "relay.toml"
    config.write_text(
        f'hostname = "relay.bench"\n[redis]\nurl = "{redis_server.url}"\n'
        f'[tls]\ncert = "{cert}"\nkey = "{key}"\n[spool]\ndir = "{work / "spool"}"\n'
        f'[[submission.listeners]]\naddress = "127.0.0.1:{submit_port}"\ntls = "implicit"\n'
        '[delivery]\nworkers = 32\npoll_interval = "100ms"\n'
        + "".join(
            f'[[delivery.egress]]\nip = "127.0.0.{i}"\nhelo = "out{i}.bench"\n' for i in range(2, 6)
        )
        + f'[delivery.routes]\n"*" = "127.0.0.1:{sink_port}"\n[log]\nlevel = "warning"\n'
        + '[quota]\nper_minute = "1000000000/min"\n'
    )
    redis = connect(redis_server.url, timeout=5)
    # A plan large enough that the quota never refuses (without a plan an account cannot send).
    await create_account(
        AccountStore(redis, SystemClock()),
        QuotaStore(redis, default_per_minute=10**9, per_recipient=10**9),
        login="bench",
        password=PASSWORD,
        daily=10**9,
    )
    await IdentityStore(redis, SystemClock()).mark_verified(
        "bench", "bench@example.org", "operator"
    )  # the sender and From: of its messages (sender identities are enforced)
    await redis.aclose()
    results = []
    processes = []
    try:
        # Baseline: the same load straight into the sink.
        sink = await spawn(
            "--config",
            str(config),
            "sink",
            "--listen",
            f"127.0.0.1:{sink_port}",
            "--dir",
            str(work / "direct"),
        )
        processes.append(sink)
        await wait_port(sink_port)
        started = time.monotonic()
        latencies = await load(
            sink_port, messages=messages, sessions=sessions, tls=None, login=False
        )
        accepted = time.monotonic()
        done = await wait_files(work / "direct", messages, 120)
        results.append(
            result(
                "direct to sink (baseline)", messages, sessions, started, accepted, done, latencies
            )
        )
        sink.send_signal(signal.SIGTERM)
        await sink.wait()

        sink = await spawn(
            "--config",
            str(config),
            "sink",
            "--listen",
            f"127.0.0.1:{sink_port}",
            "--dir",
            str(work / "relayed"),
        )
        relay = await spawn("--config", str(config), "run")
        processes += [sink, relay]
        await wait_port(sink_port)
        await wait_port(submit_port)
        started = time.monotonic()
        latencies = await load(
            submit_port, messages=messages, sessions=sessions, tls=client_tls, login=True
        )
        accepted = time.monotonic()
        done = await wait_files(work / "relayed", messages, 300)
        results.append(
            result(
                "relay: TLS+AUTH, queue, 4 egress IPs",
                messages,
                sessions,
                started,
                accepted,
                done,
                latencies,
            )
        )
        for process in (relay, sink):
            process.send_signal(signal.SIGTERM)
            await process.wait()
        for name, env in [
            ("delivery only: 4 IPs, sessions reused", {}),
            ("delivery only: 4 IPs, 1 session/msg", {"RELAY_DELIVERY__SESSION_MAX_MESSAGES": "1"}),
        ]:
            results.append(
                await delivery_only(
                    name, config, redis_server.url, work, sink_port, submit_port, messages, env
                )
            )
    finally:
        for process in processes:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                await process.wait()
        redis_server.stop()
    return results


async def delivery_only(
    name: str,
    config: Path,
    redis_url: str,
    work: Path,
    sink_port: int,
    submit_port: int,
    messages: int,
    env: dict[str, str],
) -> Result:
    """Queue `messages` straight into a running relay; time until the sink has them all."""
    folder = work / f"delivered-{len(os.listdir(work))}"
    sink = await spawn(
        "--config", str(config), "sink", "--listen", f"127.0.0.1:{sink_port}", "--dir", str(folder)
    )
    relay = await spawn("--config", str(config), "run", env=env)
    redis = connect(redis_url, timeout=5)
    queue = QueueStore(redis, SystemClock(), Spool(work / "spool"))
    try:
        await wait_port(sink_port)
        await wait_port(submit_port)
        latencies: list[float] = []

        async def put(n: int) -> None:
            started = time.perf_counter()
            envelope = Envelope("bench@example.org", (f"d{n}@example.com",), "bench")
            await queue.enqueue(envelope, BODY)
            latencies.append(time.perf_counter() - started)

        started = time.monotonic()
        for first in range(0, messages, 50):
            await asyncio.gather(*(put(n) for n in range(first, min(first + 50, messages))))
        accepted = time.monotonic()
        done = await wait_files(folder, messages, 300)
    finally:
        await redis.aclose()
        for process in (relay, sink):
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                await process.wait()
    return result(name, messages, 0, started, accepted, done, latencies)


def report(results: list[Result]) -> None:
    print(
        f"{'scenario':<40} {'msgs':>6} {'sess':>5} {'accepted/s':>11} {'delivered/s':>12}"
        f" {'p50 ms':>8} {'p99 ms':>8}"
    )
    for r in results:
        print(
            f"{r.scenario:<40} {r.messages:>6} {r.sessions:>5} {r.accepted_per_s:>11}"
            f" {r.delivered_per_s:>12} {r.accept_p50_ms:>8} {r.accept_p99_ms:>8}"
        )
    base, relay = results[0], results[1]
    print(f"ratio relay/baseline, delivered/s: {relay.delivered_per_s / base.delivered_per_s:.2f}")
    save_results("e2e", [asdict(r) for r in results])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--sessions", type=int, default=20)
    options = parser.parse_args()
    report(asyncio.run(main(min(options.messages, 20_000), min(options.sessions, 200))))
