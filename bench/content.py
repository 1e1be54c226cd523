"""What content scanning costs: the relay with clamd + rspamd on against off, in the same run.

`relay run` (its default processes) takes 5 KB messages over implicit TLS + AUTH from
`bench.load` and delivers them to a sink process; the same load with `[content]` off and on,
alternately (off, on, off, on, ...: `--rounds` pairs), so both see the same machine.
Reported: accepted/s and delivered/s (end to end), accept p50/p99, and the cost of scanning
as the share of end-to-end throughput lost (target: at most 30%), as the mean of each
round's on/off ratio. The machine is shared, so the same cost is also given from CPU alone:
the CPU per message of everything the run starts (relay, clamd, rspamd, sink, and this
process, the load generator), off against on: the throughput a CPU-bound machine loses,
whatever else ran meanwhile. Then each scanner alone, asked directly (the relay's own
clients) at the relay's concurrency: p50/p99 per scan of a 5 KB message, and one 20 MB
message. clamd and rspamd are started here as the tests start them
(tests/support/scanners.py: their own signatures and rules, temp dirs, the relay talking to
both over their unix sockets).

    .venv/bin/python -m bench.content [--messages 2000] [--sessions 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.load import LoadSpec, body_for, client_context, run
from bench.net import children, free_port, save_results, wait_port
from bench.scenarios import cpu_seconds
from quota import QuotaStore
from relay.accounts import AccountStore
from relay.accounts.provisioning import create_account
from relay.clock import SystemClock
from relay.content.clamd import ClamdAddress, ClamdClient
from relay.content.message_file import MessageFile
from relay.content.rspamd import Envelope, RspamdClient
from relay.embedded_redis import EmbeddedRedis
from relay.redis_client import connect
from relay.sender_auth import IdentityStore
from relay.tls import ensure_self_signed
from tests.support.scanners import Clamd, Rspamd

PASSWORD = "bench-password-1"
SIZE = 5_000


async def spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "relay",
        *args,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


def config_text(
    work: Path, redis_url: str, submit: int, sink: int, scan: bool, clamd: Clamd, rspamd: Rspamd
) -> str:
    text = (
        f'hostname = "relay.bench"\n[redis]\nurl = "{redis_url}"\n'
        f'[tls]\ncert = "{work / "cert.pem"}"\nkey = "{work / "key.pem"}"\n'
        f'[spool]\ndir = "{work / "spool"}"\n'
        f'[[submission.listeners]]\naddress = "127.0.0.1:{submit}"\ntls = "implicit"\n'
        '[delivery]\nworkers = 32\npoll_interval = "100ms"\n'
        + "".join(
            f'[[delivery.egress]]\nip = "127.0.0.{i}"\nhelo = "out{i}.bench"\n' for i in range(2, 6)
        )
        + f'[delivery.routes]\n"*" = "127.0.0.1:{sink}"\n[log]\nlevel = "warning"\n'
        + '[quota]\nper_minute = "1000000000/min"\nper_recipient = "1000000000/min"\n'
    )
    if scan:
        text += (
            f'[content.clamd]\naddress = "{clamd.unix_address}"\n'
            f'[content.rspamd]\nurl = "{rspamd.unix_url}"\n'
        )
    return text


def count_files(directory: Path) -> int:
    try:
        return len(os.listdir(directory))
    except FileNotFoundError:
        return 0


def tree_cpu(pid: int | None) -> float:
    """CPU seconds of a process and its children (relay run's supervisor, rspamd's workers)."""
    if pid is None:
        return 0.0
    return cpu_seconds(pid) + sum(cpu_seconds(child) for child in children(pid))


async def one_pass(
    name: str,
    work: Path,
    redis_url: str,
    scan: bool,
    clamd: Clamd,
    rspamd: Rspamd,
    messages: int,
    sessions: int,
    first_id: int,
) -> dict[str, Any]:
    submit, sink_port = free_port(), free_port()
    config = work / f"{name}.toml"
    config.write_text(config_text(work, redis_url, submit, sink_port, scan, clamd, rspamd))
    received = work / f"sink-{name}"
    sink = await spawn(
        "--config",
        str(config),
        "sink",
        "--listen",
        f"127.0.0.1:{sink_port}",
        "--dir",
        str(received),
    )
    relay = await spawn("--config", str(config), "run")
    try:
        await wait_port(sink_port)
        await wait_port(submit)
        spec = LoadSpec(
            port=submit,
            messages=messages,
            sessions=sessions,
            size=SIZE,
            tls="implicit",
            accounts=[("bench", PASSWORD)],
            first_id=first_id,
            timeout=120,
        )
        scanners = {
            "clamd": clamd.process.pid if clamd.process else None,
            "rspamd": rspamd.process.pid if rspamd.process else None,
        }
        before = {name: tree_cpu(pid) for name, pid in scanners.items()}
        before["relay"] = tree_cpu(relay.pid)
        before["sink"] = tree_cpu(sink.pid)
        before["load"] = time.process_time()
        started = time.monotonic()
        result = await run(spec, client_context(str(work / "cert.pem")))
        accepted = len(result.acked)
        deadline = time.monotonic() + 300
        while count_files(received) < accepted and time.monotonic() < deadline:  # noqa: ASYNC110 (files of another process)
            await asyncio.sleep(0.02)
        done = time.monotonic()
        cpu = {name: tree_cpu(pid) - before[name] for name, pid in scanners.items()}
        cpu["relay"] = tree_cpu(relay.pid) - before["relay"]
        cpu["sink"] = tree_cpu(sink.pid) - before["sink"]
        cpu["load"] = time.process_time() - before["load"]
        cpu["total"] = sum(cpu.values())
        return {
            **{
                f"{name}_cpu_ms_per_msg": round(s * 1000 / max(1, accepted), 2)
                for name, s in cpu.items()
            },
            "scenario": name,
            "scanning": scan,
            "accepted": accepted,
            "refused": dict(result.refusals),
            "errors": dict(result.errors),
            "accepted_per_s": round(accepted / result.seconds, 1),
            "delivered_per_s": round(count_files(received) / (done - started), 1),
            "accept_p50_ms": round(result.percentile(0.5) * 1000, 2),
            "accept_p99_ms": round(result.percentile(0.99) * 1000, 2),
        }
    finally:
        for process in (relay, sink):
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                await process.wait()


async def scanner_latency(
    work: Path, clamd: Clamd, rspamd: Rspamd, count: int, concurrency: int
) -> dict[str, Any]:
    """Each scanner alone, over the relay's own clients, `concurrency` scans at a time."""
    small = work / "one.eml"
    small.write_bytes(body_for("1", SIZE, "bench@load.bench"))
    big = work / "big.eml"
    big.write_bytes(body_for("2", 20_000_000, "bench@load.bench"))
    clamd_client = ClamdClient(ClamdAddress.parse(clamd.unix_address))
    rspamd_client = RspamdClient(rspamd.url)

    sizes = {small: small.stat().st_size, big: big.stat().st_size}

    async def clamd_scan(path: Path) -> float:
        started = time.perf_counter()
        await clamd_client.scan(MessageFile(path, sizes[path]))
        return time.perf_counter() - started

    envelope = Envelope(
        ip="192.0.2.10",
        helo="client.bench",
        mail_from="bench@load.bench",
        recipients=("u@example.com",),
        user="bench",
        queue_id="bench",
    )

    async def rspamd_scan(path: Path) -> float:
        started = time.perf_counter()
        await rspamd_client.check(MessageFile(path, sizes[path]), envelope)
        return time.perf_counter() - started

    out: dict[str, Any] = {}
    try:
        for name, scan in (("clamd", clamd_scan), ("rspamd", rspamd_scan)):
            await scan(small)  # warm
            ordered = sorted(await _concurrently(scan, small, count, concurrency))
            out[name] = {
                "scans": count,
                "concurrency": concurrency,
                "p50_ms": round(statistics.median(ordered) * 1000, 2),
                "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
                "20MB_ms": round(await scan(big) * 1000, 1),
            }
    finally:
        await rspamd_client.aclose()
    return out


async def _concurrently(scan: Any, path: Path, count: int, concurrency: int) -> list[float]:
    times: list[float] = []
    gate = asyncio.Semaphore(concurrency)

    async def timed() -> None:
        async with gate:
            times.append(await scan(path))

    await asyncio.gather(*(timed() for _ in range(count)))
    return times


async def main(messages: int, sessions: int, rounds: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="relay-bench-content-"))
    (work / "clamd").mkdir()
    (work / "rspamd").mkdir()
    # rspamd as deployed: a normal worker per core (its default), not the tests' single one,
    # and without the tests' markers and envelope echo (a Lua rule run on every message).
    clamd = Clamd(work / "clamd")
    rspamd = Rspamd(work / "rspamd", workers=os.cpu_count() or 1, test_rules=False)
    redis_server = EmbeddedRedis(work / "redis", port=free_port())
    redis_server.start()
    ensure_self_signed(work / "cert.pem", work / "key.pem", "relay.bench")
    try:
        await asyncio.to_thread(clamd.start)
        await asyncio.to_thread(rspamd.start)
        redis = connect(redis_server.url, timeout=5)
        await create_account(
            AccountStore(redis, SystemClock()),
            QuotaStore(redis, default_per_minute=10**9, per_recipient=10**9),
            login="bench",
            password=PASSWORD,
            daily=10**9,
        )
        await IdentityStore(redis, SystemClock()).mark_verified(
            "bench", "bench@load.bench", "operator"
        )
        await redis.aclose()
        passes = []
        for n, scan in enumerate((False, True) * rounds):
            name = f"{'on' if scan else 'off'}-{n // 2 + 1}"
            row = await one_pass(
                name, work, redis_server.url, scan, clamd, rspamd, messages, sessions, n * messages
            )
            print(row, flush=True)
            passes.append(row)
        latency = await scanner_latency(work, clamd, rspamd, 500, sessions)
    finally:
        clamd.stop()
        rspamd.stop()
        redis_server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return {"passes": passes, "scanners": latency}


def report(results: dict[str, Any]) -> dict[str, Any]:
    def mean(scan: bool, key: str) -> float:
        return statistics.mean(p[key] for p in results["passes"] if p["scanning"] is scan)

    def round_cost(key: str) -> float:
        """The mean over rounds of 1 - on/off, each round's pair run back to back."""
        passes = results["passes"]
        pairs = [(passes[i], passes[i + 1]) for i in range(0, len(passes) - 1, 2)]
        return statistics.mean(1 - on[key] / off[key] for off, on in pairs if off[key])

    summary: dict[str, dict[str, Any]] = {}
    keys = ("accepted_per_s", "delivered_per_s", "accept_p50_ms", "accept_p99_ms")
    keys += ("relay_cpu_ms_per_msg", "clamd_cpu_ms_per_msg", "rspamd_cpu_ms_per_msg")
    keys += ("sink_cpu_ms_per_msg", "load_cpu_ms_per_msg", "total_cpu_ms_per_msg")
    for key in keys:
        summary[key] = {"off": round(mean(False, key), 2), "on": round(mean(True, key), 2)}
    for key in ("accepted_per_s", "delivered_per_s"):
        summary[key]["cost"] = round(round_cost(key), 3)
    total = summary["total_cpu_ms_per_msg"]
    total["cost"] = round(1 - total["off"] / total["on"], 3) if total["on"] else None
    print(f"{'':24}{'off':>10}{'on':>10}{'cost':>8}")
    for key, row in summary.items():
        cost = f"{row['cost']:.0%}" if row.get("cost") is not None else ""
        print(f"{key:24}{row['off']:>10}{row['on']:>10}{cost:>8}")
    cost = summary["delivered_per_s"]["cost"]
    verdict = "met" if cost <= 0.30 else "MISSED"
    print(f"target: scanning costs <= 30% of end-to-end throughput: {verdict} ({cost:.0%});")
    print(f"  from CPU per message alone (as if CPU-bound): {total['cost']:.0%}")
    for name, row in results["scanners"].items():
        print(
            f"{name}: p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms per 5 KB scan"
            f" ({row['concurrency']} at a time), 20 MB: {row['20MB_ms']} ms"
        )
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="off/on pairs, alternated")
    options = parser.parse_args()
    results = asyncio.run(main(options.messages, options.sessions, options.rounds))
    results["summary"] = report(results)
    save_results("content", results)
