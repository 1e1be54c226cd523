"""The real `relay run` in a child process, for the tests that kill it or its Redis."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import aiosmtplib

from tests.conftest import PASSWORD
from tests.support.redis_fleet import on_cluster


def write_config(
    path: Path,
    *,
    redis_url: str,
    server_cert: tuple[Path, Path],
    submit_port: int,
    sink_port: int,
    egress: Sequence[str] = ("127.0.0.2",),
    delivery: str = "",
    redis: str = "",
    tls: str = "implicit",
    http_port: int | None = None,
    fleet: str = "",
    node: str = "",
) -> None:
    """A relay.toml: one listener (implicit TLS unless `tls = "starttls"`), every domain to
    the sink. `delivery`, `redis` and `node` are extra TOML lines for those sections;
    `http_port`: the HTTP listener (consoles, APIs, metrics) on that port, its key beside
    the file; `fleet`: TOML lines that say where Redis is, instead of `url = redis_url` (a
    Cluster's `cluster_nodes`, Sentinels and their `service`)."""
    cert, key = server_cert
    # RELAY_TEST_REDIS=cluster: redis_url is one Cluster node's, enough to find the others
    where = f'cluster_nodes = ["{redis_url}"]' if on_cluster() else f'url = "{redis_url}"'
    where = fleet or where
    pool = "".join(
        f'[[delivery.egress]]\nip = "{ip}"\nhelo = "out{n}.relay.test"\n'
        for n, ip in enumerate(egress)
    )
    path.write_text(
        f"""
hostname = "relay.test"
[redis]
{where}
{redis}
[tls]
cert = "{cert}"
key = "{key}"
[spool]
dir = "{path.parent / "spool"}"
[[submission.listeners]]
address = "127.0.0.1:{submit_port}"
tls = "{tls}"
[delivery]
poll_interval = "50ms"
retry_interval = "1s"
{delivery}
{pool}
[delivery.routes]
"*" = "127.0.0.1:{sink_port}"
[log]
format = "json"
level = "warning"
[node]
{node}
"""
    )
    if http_port is not None:
        with path.open("a") as extra:
            extra.write(
                f'\n[http]\nenabled = true\nlisten = "127.0.0.1:{http_port}"\n'
                f'secret_file = "{path.parent / "http.key"}"\nsecure_cookies = false\n'
            )


async def start_relay(
    config: Path, port: int, *, processes: int = 1, **env: str
) -> asyncio.subprocess.Process:
    """Start it and wait until it listens on `port`; its log goes to relay.log beside the
    config, whose end a failure to start shows. One process unless asked: the tests that
    kill it mean to kill the process that holds the sessions and the deliveries."""
    log = config.parent / "relay.log"
    with log.open("ab") as sink:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "relay", "--config", str(config), "run",
            "--processes", str(processes),
            env={**os.environ, **env},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=sink,
        )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.returncode is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise AssertionError(f"relay exited with {process.returncode}: {tail}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            await writer.wait_closed()
            return process
        except OSError:
            await asyncio.sleep(0.05)
    raise TimeoutError("relay process did not start")


async def stop_relay(process: asyncio.subprocess.Process) -> int:
    """SIGTERM, as an operator stops it; its exit code (killed after 20 s)."""
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 20)
        except TimeoutError:
            process.kill()
            await process.wait()
    return int(process.returncode or 0)


async def submit(port: int, ca, n: int) -> str:
    """One message from alice (implicit TLS, AUTH) to r{n}@example.com; its queue id."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    async with aiosmtplib.SMTP(
        hostname="127.0.0.1", port=port, use_tls=True, tls_context=context, timeout=10
    ) as smtp:
        await smtp.login("alice", PASSWORD)
        body = f"Subject: message {n}\r\n\r\nmessage {n}\r\n".encode()
        _, reply = await smtp.sendmail("alice@example.org", [f"r{n}@example.com"], body)
    assert reply.startswith("2.0.0 Queued as ")
    return reply.split()[-1]


async def submit_many(port: int, ca, first: int, count: int) -> None:
    """Messages r{first}…r{first+count-1}@example.com from alice over one session (fast:
    one TLS handshake and one AUTH for them all)."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    async with aiosmtplib.SMTP(
        hostname="127.0.0.1", port=port, use_tls=True, tls_context=context, timeout=10
    ) as smtp:
        await smtp.login("alice", PASSWORD)
        for n in range(first, first + count):
            body = f"Subject: message {n}\r\n\r\nmessage {n}\r\n".encode()
            _, reply = await smtp.sendmail("alice@example.org", [f"r{n}@example.com"], body)
            assert reply.startswith("2.0.0 Queued as "), reply
