"""Quota decisions per second against a real redis-server (AOF, fsync always, as embedded).

Scenarios: one credential and 10,000 credentials, sequential and with 50 concurrent callers.
Baseline in the same run: a bare round trip (PING) with the same concurrency, so the ratio
says what the Lua decision costs over the network round trip it cannot avoid. Also: Redis
commands per decision (must be exactly 1) and Redis memory per active credential.

    .venv/bin/python -m bench.quota [--decisions 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from bench.net import free_port, save_results
from quota import Plan, QuotaStore
from relay.embedded_redis import EmbeddedRedis
from relay.redis_client import connect

NOW = 1_800_000_000.0


async def run(calls: int, concurrency: int, one: Any) -> float:
    """Calls per second of `one(i)` with `concurrency` callers."""
    per = calls // concurrency

    async def caller(c: int) -> None:
        for i in range(per):
            await one(c * per + i)

    started = time.perf_counter()
    await asyncio.gather(*(caller(c) for c in range(concurrency)))
    return per * concurrency / (time.perf_counter() - started)


def _worker(url: str, calls: int, concurrency: int, seed: int) -> tuple[int, float, float]:
    """One load process: (calls, start, end) of reserve() on random credentials."""

    async def go() -> tuple[int, float, float]:
        redis = connect(url, timeout=10, max_connections=concurrency + 2)
        store = QuotaStore(redis, default_per_minute=10**9, per_recipient=10**9)
        rng = random.Random(seed)

        async def one(i: int) -> None:  # one decision, in its own transaction
            login = f"acct{rng.randrange(10_000)}"
            await store.reserve(login, f"p{seed}.{i}", f"r{i}@example.com", NOW + i / 1000)

        await redis.ping()
        started = time.perf_counter()
        rate = await run(calls, concurrency, one)
        await redis.aclose()
        return calls, started, started + calls / rate

    return asyncio.run(go())


def multi_process(url: str, calls: int, concurrency: int, processes: int) -> float:
    """Decisions/s with the callers spread over several processes (the Python client, not
    Redis, is what one process runs out of first)."""
    with ProcessPoolExecutor(processes) as pool:
        futures = [
            pool.submit(_worker, url, calls // processes, concurrency // processes, seed)
            for seed in range(processes)
        ]
        parts = [f.result() for f in futures]
    done = sum(n for n, _, _ in parts)
    return done / (max(end for _, _, end in parts) - min(start for _, start, _ in parts))


async def commands(redis: Any, name: str) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))


async def main(decisions: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="relay-bench-quota-"))
    server = EmbeddedRedis(work / "redis", port=free_port())
    server.start()
    redis = connect(server.url, timeout=10, max_connections=64)
    store = QuotaStore(redis, default_per_minute=10**9, per_recipient=10**9)
    results: dict[str, Any] = {}
    try:
        logins = [f"acct{n}" for n in range(10_000)]
        for login in ["solo", *logins]:
            await store.add_plan(login, Plan("p", daily=10**9, per_minute=10**9))
        rng = random.Random(1)

        async def ping(_: int) -> None:
            await redis.ping()

        async def solo(i: int) -> None:
            await store.reserve("solo", f"t{i}", f"r{i}@example.com", NOW + i / 1000)

        async def many(i: int) -> None:
            login = logins[rng.randrange(len(logins))]
            await store.reserve(login, f"m{i}", f"r{i}@example.com", NOW + i / 1000)

        for concurrency in (1, 50):
            results[f"ping c={concurrency}"] = await run(decisions, concurrency, ping)
            before = await commands(redis, "evalsha")
            results[f"1 credential c={concurrency}"] = await run(decisions, concurrency, solo)
            per = (await commands(redis, "evalsha") - before) / decisions
            results[f"redis commands per decision c={concurrency}"] = per
            results[f"10k credentials c={concurrency}"] = await run(decisions, concurrency, many)
        results["10k credentials c=50, 2 processes"] = await asyncio.to_thread(
            multi_process, server.url, decisions, 50, 2
        )
        stats = (await redis.info("commandstats"))["cmdstat_evalsha"]
        results["redis usec per decision (server side)"] = float(stats["usec_per_call"])
        results["redis capacity, decisions/s (1 core)"] = 1e6 / float(stats["usec_per_call"])
        # memory: every credential has been used above; reservations are committed (deleted)
        # at DATA in real use, so drop them before measuring what stays per credential
        async for key in redis.scan_iter(match="quota:*:res:*", count=1000):
            await redis.delete(key)
        sample = logins[:200]
        total = 0
        for login in sample:
            for key in await redis.keys(f"quota:{{{login}}}:*"):
                total += int(await redis.memory_usage(key) or 0)
        results["bytes per active credential (sampled)"] = total / len(sample)
    finally:
        await redis.aclose()
        server.stop()
    return results


def report(results: dict[str, Any]) -> None:
    for name, value in results.items():
        print(f"{name:<42} {value:>12.1f}")
    for c in (1, 50):
        ratio = results[f"1 credential c={c}"] / results[f"ping c={c}"]
        print(f"{f'decision/ping ratio c={c}':<42} {ratio:>12.2f}")
    save_results("quota", results)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--decisions", type=int, default=20_000)
    options = parser.parse_args()
    report(asyncio.run(main(min(options.decisions, 200_000))))
