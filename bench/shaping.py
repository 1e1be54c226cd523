"""Delivery with shaping rules on vs off (same run), and DNS lookups per delivered message.

A running relay (`relay run`, 32 workers, 4 egress IPs) delivers N messages put straight
into its queue, over the MX path: example.com's MX and addresses come from a DNS server in
this process (the test suite's, counting queries), the MX host is a `relay sink` on
loopback. Scenarios, alternated so that drift on a shared machine hits both sides:

- shaping off: no shaping file (the built-in rule: no fleet gate);
- shaping on: a rule for example.com whose limits never bind (connections, a paced rate
  above what the relay reaches, a reaction), so every message goes through the Redis gate;
- DNS cache off, for the lookups per message without it.

Reported: delivered/s per scenario, the on/off ratio (target: at most 10 % slower), and DNS
queries per delivered message (target with the cache, at steady state: at most 0.05).

    .venv/bin/python -m bench.shaping [--messages 2000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.e2e import BODY, spawn, wait_files
from bench.net import free_port, save_results, wait_port
from relay.clock import SystemClock
from relay.embedded_redis import EmbeddedRedis
from relay.queue import Envelope, QueueStore
from relay.redis_client import connect
from relay.spool import Spool
from tests.support.dns_server import DnsServer  # the suite's DNS server, counting queries

RULES = """
[[rule]]
name = "example"
domains = ["example.com"]
max_connections_per_ip = 1000
max_connections = 10000
rate_per_ip = "1000/s"
max_messages_per_connection = 100
[[rule.reactions]]
code = 421
status = "4.7.28"
action = "move"
duration = "1h"
"""
"""Never binding here: the relay delivers well under 4 IPs x 1000/s on this machine."""


@dataclass
class Result:
    scenario: str
    messages: int
    seconds: float
    delivered_per_s: float
    dns_queries: int
    dns_per_message: float
    redis_scripts_per_message: float
    """Lua script calls per message (the queue's claim and finish, and the gate's): the
    difference between "on" and "off" is the gate's round trips, a steadier measure than
    delivered/s on a shared machine."""


async def scenario(
    name: str,
    *,
    work: Path,
    redis_url: str,
    dns: DnsServer,
    messages: int,
    shaping: bool,
    dns_cache: bool,
) -> Result:
    sink_port = free_port()
    folder = work / f"delivered-{name.replace(' ', '-')}-{time.monotonic_ns()}"
    config = work / f"relay-{time.monotonic_ns()}.toml"
    shaping_file = work / "shaping.toml"
    shaping_file.write_text(RULES)
    config.write_text(
        f'hostname = "relay.bench"\n[redis]\nurl = "{redis_url}"\n'
        f'[tls]\ncert = "{work / "cert.pem"}"\nkey = "{work / "key.pem"}"\nself_signed = true\n'
        f'[spool]\ndir = "{work / "spool"}"\n'
        f'[[submission.listeners]]\naddress = "127.0.0.1:{free_port()}"\ntls = "implicit"\n'
        f'[dns]\nservers = ["127.0.0.1:{dns.port}"]\ncache_size = {10_000 if dns_cache else 0}\n'
        '[delivery]\nworkers = 32\npoll_interval = "100ms"\nallow_private_destinations = true\n'
        f"mx_port = {sink_port}\n"
        + (f'shaping = "{shaping_file}"\n' if shaping else "")
        + "".join(
            f'[[delivery.egress]]\nip = "127.0.0.{i}"\nhelo = "out{i}.bench"\n' for i in range(2, 6)
        )
        + '[log]\nlevel = "warning"\n'
    )
    sink = await spawn(
        "--config", str(config), "sink", "--listen", f"127.0.0.1:{sink_port}", "--dir", str(folder)
    )
    relay = await spawn("--config", str(config), "run", "--processes", "1")
    redis = connect(redis_url, timeout=5)
    queue = QueueStore(redis, SystemClock(), Spool(work / "spool"))
    try:
        await wait_port(sink_port)
        await asyncio.sleep(1.0)  # the relay is up (its listener port is not needed here)
        asked = len(dns.queries)
        calls = await redis_calls(redis)
        started = time.monotonic()
        for first in range(0, messages, 50):
            await asyncio.gather(
                *(
                    queue.enqueue(
                        Envelope("bench@example.org", (f"d{n}@example.com",), "bench"), BODY
                    )
                    for n in range(first, min(first + 50, messages))
                )
            )
        done = await wait_files(folder, messages, 300)
        queries = len(dns.queries) - asked
        calls = await redis_calls(redis) - calls
    finally:
        await redis.aclose()
        for process in (relay, sink):
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                await process.wait()
    seconds = done - started
    return Result(
        name,
        messages,
        round(seconds, 3),
        round(messages / seconds, 1),
        queries,
        round(queries / messages, 4),
        round(calls / messages, 2),
    )


async def redis_calls(redis: Any) -> int:
    """Script calls so far (commandstats also counts the commands run inside scripts)."""
    stats = await redis.info("commandstats")
    return sum(
        int(stats.get(name, {}).get("calls", 0)) for name in ("cmdstat_evalsha", "cmdstat_eval")
    )


async def main(messages: int, rounds: int) -> list[Result]:
    work = Path(tempfile.mkdtemp(prefix="relay-bench-shaping-"))
    redis_server = EmbeddedRedis(work / "redis", port=free_port())
    redis_server.start()
    zone = "example.com. 300 MX 10 mx.example.com.\nmx.example.com. 300 A 127.0.0.1\n"
    results: list[Result] = []
    try:
        async with DnsServer(zone) as dns:
            dns.set("com.", "SOA", "ns.com. admin.com. 1 3600 600 86400 300", ttl=3600)
            common = dict(work=work, redis_url=redis_server.url, dns=dns, messages=messages)
            for _ in range(rounds):
                for name, shaping in (("shaping off", False), ("shaping on", True)):
                    results.append(
                        await scenario(name, shaping=shaping, dns_cache=True, **common)  # type: ignore[arg-type]
                    )
            results.append(
                await scenario("dns cache off", shaping=False, dns_cache=False, **common)  # type: ignore[arg-type]
            )
    finally:
        redis_server.stop()
    return results


def report(results: list[Result]) -> None:
    print(
        f"{'scenario':<16} {'msgs':>6} {'seconds':>8} {'delivered/s':>12} {'DNS q/msg':>10}"
        f" {'scripts/msg':>12}"
    )
    for r in results:
        print(
            f"{r.scenario:<16} {r.messages:>6} {r.seconds:>8} {r.delivered_per_s:>12}"
            f" {r.dns_per_message:>10} {r.redis_scripts_per_message:>12}"
        )
    off = statistics.median(r.delivered_per_s for r in results if r.scenario == "shaping off")
    on = statistics.median(r.delivered_per_s for r in results if r.scenario == "shaping on")
    cached = [r.dns_per_message for r in results if r.scenario != "dns cache off"]
    print(f"shaping on/off, delivered/s (medians): {on / off:.3f} (overhead {1 - on / off:+.1%})")
    print(f"DNS queries per delivered message with the cache: max {max(cached)}")
    save_results("shaping", [asdict(r) for r in results])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    options = parser.parse_args()
    report(asyncio.run(main(min(options.messages, 20_000), min(options.rounds, 5))))
