"""Two relay processes on one Redis share one shaping rule: together they never send faster
than it allows (counted at the sink); `relay reload` and SIGHUP reload the rules."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from relay.sink import Sink
from tests.conftest import add_sender, free_port, wait_until
from tests.support.relay_process import start_relay, stop_relay, submit_many, write_config

RATE = 10  # per second: one message every 100 ms, whichever process sends it
PER_RELAY = 20

RULE = """
[[rule]]
name = "example"
domains = ["example.com"]
rate_per_ip = "{rate}"
"""


class TimedSink(Sink):
    def __init__(self) -> None:
        super().__init__()
        self.arrivals: list[float] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.arrivals.append(asyncio.get_running_loop().time())
        return await super().handle_DATA(server, session, envelope)


def reloads(config: Path) -> int:
    log = (config.parent / "relay.log").read_text(errors="replace").splitlines()
    return sum(1 for line in log if line.startswith("{") and '"shaping.reloaded"' in line)


def relay_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.timeout(120)
async def test_two_processes_together_keep_to_one_rate(
    redis, redis_server, server_cert, ca, tmp_path
) -> None:
    await add_sender(redis)
    sink = TimedSink()
    relays = []
    async with sink.serving() as server:
        sink_port = server.sockets[0].getsockname()[1]
        configs, ports = [], []
        for n in range(2):
            home = tmp_path / f"relay{n}"
            home.mkdir()
            shaping = home / "shaping.toml"
            shaping.write_text(RULE.format(rate=f"{RATE}/s"))
            ports.append(free_port())
            configs.append(home / "relay.toml")
            write_config(
                configs[-1],
                redis_url=redis_server.url,
                server_cert=server_cert,
                submit_port=ports[-1],
                sink_port=sink_port,
                delivery=f'shaping = "{shaping}"\nshaping_max_wait = "30s"',
            )
        try:
            for config, port in zip(configs, ports, strict=True):
                relays.append(await start_relay(config, port, RELAY_LOG__LEVEL="info"))
            await asyncio.gather(
                *(submit_many(port, ca, n * PER_RELAY, PER_RELAY) for n, port in enumerate(ports))
            )
            await sink.wait_for(2 * PER_RELAY, timeout=60)

            # counted at the sink: no window of one second ever holds more than RATE messages
            # (a few ms of slack: the token is taken before MAIL FROM, the time is at DATA)
            times = sorted(sink.arrivals)
            closest = min(times[i + RATE] - times[i] for i in range(len(times) - RATE))
            assert closest >= 1.0 - 0.05, closest
            assert times[-1] - times[0] >= (2 * PER_RELAY - 1) / RATE - 0.05

            # both relays delivered (the rule is shared, not split between them)
            assert {m.peer for m in sink.messages} == {"127.0.0.2"}

            # an invalid file is refused by `relay reload`, naming the key; nothing reloads
            bad = configs[0].parent / "shaping.toml"
            bad.write_text(RULE.format(rate="fast"))
            refused = relay_cli(configs[0], "reload")
            assert refused.returncode == 2
            assert refused.stderr.startswith("relay: shaping not reloaded: ")
            assert "rule 'example': rate_per_ip.0: not a rate" in refused.stderr
            bad.write_text(RULE.format(rate="1000/s"))
            done = relay_cli(configs[0], "reload")
            assert done.returncode == 0, done.stderr
            assert "1 rule(s)" in done.stdout or "2 rule(s)" in done.stdout

            async def all_reloaded() -> bool:
                return all(reloads(config) == 1 for config in configs)

            await wait_until(all_reloaded, within=10)  # every process, at its next poll

            relays[1].send_signal(signal.SIGHUP)  # one process, by signal

            async def second_reloaded() -> bool:
                return reloads(configs[1]) == 2

            await wait_until(second_reloaded, within=10)
            assert reloads(configs[0]) == 1
        finally:
            codes = [await stop_relay(relay) for relay in relays]
    assert codes == [0] * len(relays)
    log = (configs[0].parent / "relay.log").read_text()
    entries = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert not [e for e in entries if e.get("event") == "delivery.bounced"]
