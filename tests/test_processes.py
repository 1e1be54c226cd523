"""`relay run` as real processes: supervision of its parts, and a node of several processes
(restarts, shared listeners, limits that hold over the node)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from relay.clock import SystemClock
from relay.queue import QueueStore
from relay.sink import Sink
from tests.conftest import add_sender, free_port
from tests.support.relay_process import start_relay, stop_relay, submit, write_config
from tests.support.spool import temp_spool


async def greeting(port: int, ca) -> tuple[str, asyncio.StreamWriter]:
    """Connect over implicit TLS: (the first line the server sends, the open connection)."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    line = await asyncio.wait_for(reader.readline(), 10)
    return line.decode().strip(), writer


def events(log: Path, name: str) -> list[dict]:
    found = []
    for line in log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if entry.get("event") == name:
                found.append(entry)
    return found


async def until(predicate, within: float = 20.0) -> None:
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 (the state is in another process)
            await asyncio.sleep(0.05)


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return True
    return state == "Z"


def refuses(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


async def poison_next_claim(redis, queue_id: str) -> None:
    """Wait until the message's job was tried and is waiting for its retry, then corrupt it
    in Redis as a bad migration or a half-written record would: its recipients are no
    longer JSON. Whoever claims it next fails while reading it."""
    queue = QueueStore(redis, SystemClock(), temp_spool())  # jobs only: no body read

    async def tried() -> bool:
        jobs = await queue.jobs_of(queue_id)
        return bool(jobs) and jobs[0].attempts > 0

    async with asyncio.timeout(20):
        while not await tried():  # noqa: ASYNC110 (the state is in Redis)
            await asyncio.sleep(0.05)
    (job,) = await queue.jobs_of(queue_id)
    keys = [key async for key in redis.scan_iter(match=f"*{job.id}*")]
    hashes = [key for key in keys if await redis.type(key) == b"hash"]
    assert len(hashes) == 1, keys
    await redis.hset(hashes[0], "recipients", "not json [")


@pytest.mark.timeout(90)
async def test_a_dead_delivery_loop_stops_the_listeners_and_the_process(
    redis, redis_server, server_cert, ca, tmp_path
):
    await add_sender(redis)
    submit_port = free_port()
    config = tmp_path / "relay.toml"
    # Every domain goes to a port where nothing listens: the first attempt defers.
    write_config(
        config,
        redis_url=redis_server.url,
        server_cert=server_cert,
        submit_port=submit_port,
        sink_port=free_port(),
    )
    relay = await start_relay(config, submit_port)
    try:
        queue_id = await submit(submit_port, ca, 1)
        await poison_next_claim(redis, queue_id)
        code = await asyncio.wait_for(relay.wait(), 30)
    finally:
        await stop_relay(relay)
    log = tmp_path / "relay.log"
    (died,) = events(log, "relay.part_died")
    assert died["part"] == "delivery" and "JSONDecodeError" in died["error"]
    assert code == 1
    assert log.read_text().strip().splitlines()[-1].startswith("relay: delivery died: ")
    assert refuses(submit_port)


@pytest.mark.timeout(120)
async def test_per_address_limit_holds_over_the_node_and_a_killed_child_leaks_nothing(
    redis, redis_server, server_cert, ca, tmp_path
):
    submit_port = free_port()
    config = tmp_path / "relay.toml"
    write_config(
        config,
        redis_url=redis_server.url,
        server_cert=server_cert,
        submit_port=submit_port,
        sink_port=free_port(),
    )
    relay = await start_relay(
        config,
        submit_port,
        processes=2,
        RELAY_SUBMISSION__MAX_CONNECTIONS_PER_IP="3",
        RELAY_LOG__LEVEL="info",
    )
    log = tmp_path / "relay.log"
    held: list[asyncio.StreamWriter] = []
    try:
        await until(lambda: len(events(log, "relay.started")) == 2)
        first = children(relay.pid)
        # Ten connections from one address, spread by the kernel over both processes.
        replies = []
        for _ in range(10):
            line, writer = await greeting(submit_port, ca)
            replies.append(line[:9])
            held.append(writer)
        assert sorted(replies) == ["220 relay"] * 3 + ["421 4.7.0"] * 7, replies

        # kill -9 every child while they hold the address's 3 sessions: the supervisor
        # gives back what they held and restarts them.
        for pid in first:
            os.kill(pid, signal.SIGKILL)
        await until(lambda: len(events(log, "relay.started")) == 4)
        died = events(log, "relay.child_died")
        assert sorted(d["pid"] for d in died) == sorted(first)
        assert {d["status"] for d in died} == {"killed by SIGKILL"}
        assert sum(d["released_sessions"] for d in died) == 3
        assert all(d["restarts"] == 0 for d in died)
        second = children(relay.pid)
        assert len(second) == 2 and not set(second) & set(first)

        replies = []
        for _ in range(4):
            line, writer = await greeting(submit_port, ca)
            replies.append(line[:9])
            held.append(writer)
        assert sorted(replies) == ["220 relay"] * 3 + ["421 4.7.0"], replies
    finally:
        for writer in held:
            writer.close()
        assert await stop_relay(relay) == 0
    assert all(gone(pid) for pid in second), "the children stopped with their supervisor"


@contextlib.asynccontextmanager
async def two_processes(
    redis_server, server_cert, tmp_path: Path, sink: Sink, delivery: str
) -> AsyncIterator[tuple[asyncio.subprocess.Process, int]]:
    """A node of two processes delivering every domain to `sink`, started; (its supervisor,
    its submission port). Stopped cleanly at the end (exit code 0 checked)."""
    submit_port = free_port()
    async with sink.serving() as server:
        config = tmp_path / "relay.toml"
        write_config(
            config,
            redis_url=redis_server.url,
            server_cert=server_cert,
            submit_port=submit_port,
            sink_port=server.sockets[0].getsockname()[1],
            delivery=delivery,
        )
        relay = await start_relay(config, submit_port, processes=2, RELAY_LOG__LEVEL="info")
        try:
            await until(lambda: len(events(tmp_path / "relay.log", "relay.started")) == 2)
            yield relay, submit_port
        finally:
            assert await stop_relay(relay) == 0


class SlowSink(Sink):
    """A sink whose DATA takes a while, counting the transactions in progress at once."""

    def __init__(self) -> None:
        super().__init__()
        self.running = 0
        self.peak = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(0.3)
            return await super().handle_DATA(server, session, envelope)
        finally:
            self.running -= 1


@pytest.mark.timeout(120)
async def test_per_destination_limit_holds_over_the_node(
    redis, redis_server, server_cert, ca, tmp_path
):
    await add_sender(redis)
    sink = SlowSink()
    delivery = "workers = 2\nmax_connections_per_destination = 2"
    async with two_processes(redis_server, server_cert, tmp_path, sink, delivery) as node:
        _, submit_port = node
        # Two processes with 2 workers each could run 4 sessions to the sink at once.
        await asyncio.gather(*(submit(submit_port, ca, n) for n in range(12)))
        await sink.wait_for(12, timeout=60)
    assert sink.peak == 2
    delivered = events(tmp_path / "relay.log", "delivery.delivered")
    assert {d["process"] for d in delivered} == {0, 1}, "both processes delivered"


@pytest.mark.timeout(120)
async def test_the_supervisor_gives_up_on_children_that_keep_dying(
    redis, redis_server, server_cert, ca, tmp_path
):
    await add_sender(redis)
    submit_port = free_port()
    config = tmp_path / "relay.toml"
    write_config(
        config,
        redis_url=redis_server.url,
        server_cert=server_cert,
        submit_port=submit_port,
        sink_port=free_port(),
        delivery='lease = "1s"',  # the poisoned job comes due again a second later
    )
    relay = await start_relay(config, submit_port, processes=2)
    try:
        queue_id = await submit(submit_port, ca, 1)
        await poison_next_claim(redis, queue_id)
        code = await asyncio.wait_for(relay.wait(), 60)
    finally:
        await stop_relay(relay)
    log = tmp_path / "relay.log"
    died = events(log, "relay.child_died")
    assert len(died) >= 5 and all(d["status"] == "exit code 1" for d in died)
    assert [d["restart_in"] for d in died][-1] is None
    assert len(events(log, "relay.part_died")) == len(died)
    assert code == 1
    last = log.read_text().strip().splitlines()[-1]
    assert last.startswith("relay: child processes keep dying: 5 in a row"), last
    assert refuses(submit_port)


@pytest.mark.timeout(60)
async def test_children_stop_by_themselves_when_the_supervisor_is_killed(
    redis, redis_server, server_cert, tmp_path
):
    submit_port = free_port()
    config = tmp_path / "relay.toml"
    write_config(
        config,
        redis_url=redis_server.url,
        server_cert=server_cert,
        submit_port=submit_port,
        sink_port=free_port(),
    )
    relay = await start_relay(config, submit_port, processes=2, RELAY_LOG__LEVEL="info")
    await until(lambda: len(events(tmp_path / "relay.log", "relay.started")) == 2)
    pids = children(relay.pid)
    relay.send_signal(signal.SIGKILL)
    await relay.wait()
    await until(lambda: all(gone(pid) for pid in pids))
    assert len(events(tmp_path / "relay.log", "relay.parent_gone")) == 2
    assert refuses(submit_port)


def test_a_taken_port_is_one_line_at_start(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        (tmp_path / "relay.toml").write_text(
            '[redis]\nembedded_dir = "var/redis"\n[tls]\nself_signed = true\n'
            f'[[submission.listeners]]\naddress = "127.0.0.1:{port}"\ntls = "implicit"\n'
        )
        result = subprocess.run(
            [sys.executable, "-m", "relay", "--config", "relay.toml", "run", "--processes", "2"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"relay: config error: submission.listeners: cannot listen on 127.0.0.1:{port}:"
        " Address already in use"
    )
    assert not (tmp_path / "var" / "redis").exists(), "nothing was started"


class StallingSink(SlowSink):
    """DATA takes 2 s: deliveries are surely in progress when the test kills the node."""

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await asyncio.sleep(1.7)
        return await super().handle_DATA(server, session, envelope)


@pytest.mark.timeout(120)
async def test_the_supervisor_takes_back_the_leases_of_killed_children_at_once(
    redis, redis_server, server_cert, ca, tmp_path
):
    """Leases last 60 s; every child is killed -9 mid-delivery. The supervisor makes their
    jobs due again as it restarts them: all is delivered within seconds, not a lease later."""
    await add_sender(redis)
    sink = StallingSink()
    async with two_processes(redis_server, server_cert, tmp_path, sink, 'lease = "60s"') as node:
        relay, submit_port = node
        ids = await asyncio.gather(*(submit(submit_port, ca, n) for n in range(6)))
        await until(lambda: sink.running >= 2)
        for pid in children(relay.pid):
            os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        await until(lambda: set(ids) <= delivered_ids(sink), within=30)
        recovered = time.monotonic() - killed
    assert recovered < 20, f"waited {recovered:.1f} s: the leases were not taken back"
    reclaimed = events(tmp_path / "relay.log", "queue.reclaimed")
    assert sum(r["jobs"] for r in reclaimed) >= 2


def delivered_ids(sink: Sink) -> set[str]:
    found = set()
    for message in sink.messages:
        match = re.search(rb" id ([0-9a-f]+);", message.data)
        if match:
            found.add(match.group(1).decode())
    return found
