"""One node on one Redis against two nodes on a Redis Cluster: the same load, the same run.

  - single: one node (`relay run`, `--fleet-processes` processes) on one redis-server;
  - fleet: two nodes (`[node] id` a and b, each its own spool and two of the four egress
    IPs, `--fleet-processes` / 2 processes each: the same number of relay processes in all)
    on a 3-primary, 3-replica Redis Cluster started here (tests/support/redis_fleet.py),
    the sessions split over both nodes' listeners.

Both end to end: STARTTLS + AUTH, 5 KB, quota at RCPT, delivery to the counting sink.
Reported: accepted and delivered msgs/s, accept p50/p99, relay CPU per message, and Redis
commands and round trips per message (bench.redis_cost, summed over the cluster's
primaries). On this 2-core machine the fleet's six Redis servers and two nodes share the
cores the single node has to itself: the row shows what the layout costs per message, not
what more machines would add.

    .venv/bin/python -m bench.fleet [--messages 3000] [--sessions 50] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from bench.load import LoadSpec, client_context, run, summary
from bench.net import OUT, free_port, save_results, stop_process, wait_port
from bench.redis_cost import RedisSnapshot, cost, snapshot
from bench.scenarios import (
    EGRESS,
    PASSWORD,
    Bench,
    SinkProcess,
    cpu_seconds,
    exactly_once,
    relay_pids,
    relay_toml,
)
from relay.redis_client import connect
from relay.tls import ensure_self_signed
from tests.support.redis_fleet import ClusterServers


class Redises:
    """Where a row's Redis is: one server, or a cluster (counted over its primaries)."""

    def __init__(self, toml: str, client: aioredis.Redis, counted: list[aioredis.Redis]):
        self.toml = toml
        self.client = client
        self.counted = counted

    async def snapshot(self) -> RedisSnapshot:
        parts = [await snapshot(c) for c in self.counted]
        names = {name for p in parts for name in p.by_command}
        return RedisSnapshot(
            commands=sum(p.commands for p in parts),
            writes=sum(p.writes for p in parts),
            cpu=sum(p.cpu for p in parts),
            by_command={n: sum(p.by_command.get(n, 0) for p in parts) for n in names},
        )

    async def close(self) -> None:
        for c in {id(c): c for c in [self.client, *self.counted]}.values():
            with contextlib.suppress(Exception):
                await c.aclose()


def node_config(
    work: Path, name: str, port: int, redis_toml: str, egress: list[str], processes: int, sink: int
) -> Path:
    config = work / f"relay-{name}.toml"
    config.write_text(
        relay_toml(
            redis=redis_toml,
            cert=work / "cert.pem",
            key=work / "key.pem",
            port=port,
            tls="starttls",
            max_per_ip=200,
            workers=32,
            egress=egress,
            sink_port=sink,
            extra=f'[node]\nid = "{name}"\n[run]\nprocesses = {processes}\n'
            f'[spool]\ndir = "{work / f"spool-{name}"}"\n',
        )
    )
    return config


@contextlib.asynccontextmanager
async def nodes(configs: list[tuple[Path, int]]):  # type: ignore[no-untyped-def]
    started = []
    try:
        for config, port in configs:
            log = open(config.with_suffix(".log"), "wb")  # noqa: SIM115, ASYNC230
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "relay", "--config", str(config), "run",
                stdout=log, stderr=log,
            )  # fmt: skip
            started.append((process, log))
            await wait_port(port)
        await asyncio.sleep(0.5)  # every process listening
        yield [p for p, _ in started]
    finally:
        for process, log in started:
            await stop_process(process)
            log.close()


async def one_round(
    label: str,
    redises: Redises,
    work: Path,
    sink: SinkProcess,
    spec: LoadSpec,
    node_names: list[str],
    processes: int,
) -> dict[str, Any]:
    await sink.ask("reset")
    per_node = max(1, processes // len(node_names))
    split = [EGRESS[i :: len(node_names)] for i in range(len(node_names))]
    ports = [free_port() for _ in node_names]
    configs = [
        (node_config(work, name, port, redises.toml, egress, per_node, sink.port), port)
        for name, port, egress in zip(node_names, ports, split, strict=True)
    ]
    async with nodes(configs) as running:
        pids = [pid for p in running for pid in relay_pids(p)]
        cpu_before = sum(cpu_seconds(pid) for pid in pids)
        before = await redises.snapshot()
        started = time.monotonic()
        result = await run(
            replace(spec, port=ports[0], more_ports=tuple(ports[1:])),
            client_context(str(work / "cert.pem")),
        )
        stats, delivered_at = await sink.wait_for(set(result.acked), 300)
        used = cost(before, await redises.snapshot())
        cpu = sum(cpu_seconds(pid) for pid in pids) - cpu_before
    accepted = len(result.acked)
    facts = summary(result)
    return {
        "row": label,
        "accepted": accepted,
        "accepted_per_s": facts.get("msgs_per_s"),
        "delivered_per_s": round(accepted / (delivered_at - started), 1) if accepted else None,
        "p50_ms": facts.get("p50_ms"),
        "p99_ms": facts.get("p99_ms"),
        "refusals": facts.get("refusals"),
        "errors": facts.get("errors"),
        "relay_cpu_ms_per_msg": round(1000 * cpu / accepted, 2) if accepted else None,
        "redis": used.per(accepted),
        "exactly_once": exactly_once(set(result.acked), stats),
    }


async def single_redis(work: Path) -> tuple[Redises, Any]:
    from relay.embedded_redis import EmbeddedRedis

    server = EmbeddedRedis(work / "redis", port=free_port())
    server.start()
    client = connect(server.url, timeout=10)
    return Redises(f'url = "{server.url}"', client, [client]), server


async def cluster_redis(work: Path) -> tuple[Redises, ClusterServers]:
    cluster = await asyncio.to_thread(ClusterServers(work).start)
    from redis.asyncio.cluster import RedisCluster

    client = RedisCluster.from_url(cluster.url)
    await client.initialize()
    counted = [connect(f"redis://127.0.0.1:{p}", timeout=10) for p in cluster.primaries()]
    nodes_toml = ", ".join(f'"{u}"' for u in cluster.urls)
    return (
        Redises(f"cluster_nodes = [{nodes_toml}]", client, counted),  # type: ignore[arg-type]
        cluster,
    )


async def provision(redises: Redises, work: Path, options: argparse.Namespace) -> None:
    """The bench account, as bench.scenarios makes it (same hash, plan, identity)."""
    bench = Bench(work, options)
    bench.redis = redises.client
    await bench.provision(["bench"])


async def main(options: argparse.Namespace) -> None:
    work = (OUT / f"fleet-{time.strftime('%Y%m%dT%H%M%S')}").resolve()
    work.mkdir(parents=True, exist_ok=True)
    ensure_self_signed(work / "cert.pem", work / "key.pem", "relay.bench")
    sink = SinkProcess(free_port())
    await sink.start()
    spec = LoadSpec(
        port=0,
        messages=options.messages,
        sessions=options.sessions,
        size=5_000,
        per_session=20,
        accounts=[("bench", PASSWORD)],
        tls="starttls",
    )
    rows: list[dict[str, Any]] = []
    single, server = await single_redis(work)
    fleet, cluster = await cluster_redis(work)
    try:
        for redises in (single, fleet):
            await provision(redises, work, options)
        for n in range(options.rounds):
            for label, redises, names in (
                ("one node, one Redis", single, ["a"]),
                ("two nodes, Redis Cluster 3+3", fleet, ["a", "b"]),
            ):
                row = await one_round(
                    label, redises, work, sink, spec, names, options.fleet_processes
                )
                row["round"] = n + 1
                rows.append(row)
                print(
                    f"  {label}: {row['accepted']} accepted, {row['accepted_per_s']}/s,"
                    f" delivered {row['delivered_per_s']}/s, p50 {row['p50_ms']} ms,"
                    f" relay CPU {row['relay_cpu_ms_per_msg']} ms/msg,"
                    f" Redis {row['redis']['round_trips']} round trips/msg,"
                    f" exactly once: {row['exactly_once']}",
                    flush=True,
                )
    finally:
        await sink.stop()
        await single.close()
        await fleet.close()
        server.stop()
        await asyncio.to_thread(cluster.stop)
    report(rows)


def report(rows: list[dict[str, Any]]) -> None:
    medians: dict[str, dict[str, float]] = {}
    for label in dict.fromkeys(r["row"] for r in rows):
        mine = [r for r in rows if r["row"] == label]
        medians[label] = {
            key: statistics.median(float(r[key]) for r in mine if r[key] is not None)
            for key in ("accepted_per_s", "delivered_per_s", "relay_cpu_ms_per_msg")
            if any(r[key] is not None for r in mine)
        }
        medians[label]["redis_round_trips_per_msg"] = statistics.median(
            float(r["redis"]["round_trips"]) for r in mine
        )
        medians[label]["redis_commands_per_msg"] = statistics.median(
            float(r["redis"]["commands"]) for r in mine
        )
    print("\nmedians:")
    for label, values in medians.items():
        print(f"  {label}: " + ", ".join(f"{k} {v:g}" for k, v in values.items()))
    save_results("fleet", {"rows": rows, "medians": medians})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--fleet-processes", type=int, default=2, help="relay processes in all, per row"
    )
    asyncio.run(main(parser.parse_args()))
