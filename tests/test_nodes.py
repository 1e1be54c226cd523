"""Nodes of a fleet: identity, heartbeat, `relay node list|drain|resume|forget`, with a real
`relay run` (a supervisor and its children) beating into a real Redis."""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
import sys
from pathlib import Path

import aiosmtplib
import httpx
import pytest

from relay.accounts.api_keys import ApiKeys
from relay.clock import SystemClock
from relay.sink import Sink
from tests.conftest import PASSWORD, add_sender, free_port
from tests.support.relay_process import start_relay, stop_relay, submit, write_config

BEATS = 'id = "node-a"\nheartbeat = "200ms"\ndown_after = 3'
"""A node that beats five times a second and is down after 0.6 s of silence."""


async def relay_cli(config: Path, *args: str) -> tuple[int, str, str]:
    """`relay --config CONFIG ARGS…` as an operator runs it: (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "relay", "--config", str(config), *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 30)
    return int(process.returncode or 0), out.decode(), err.decode()


async def nodes(config: Path) -> dict[str, dict]:
    code, out, err = await relay_cli(config, "node", "list", "--json")
    assert code == 0, err
    return {node["id"]: node for node in json.loads(out)}


async def until_node(config: Path, node_id: str, predicate, within: float = 20.0) -> dict:
    """The node's entry of `relay node list --json` once `predicate` holds for it."""
    async with asyncio.timeout(within):
        while True:
            node = (await nodes(config)).get(node_id)
            if node is not None and predicate(node):
                return node
            await asyncio.sleep(0.1)


async def greeting(port: int, ca) -> str:
    """The first line of a new session (implicit TLS), then closed."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    try:
        return (await asyncio.wait_for(reader.readline(), 10)).decode().strip()
    finally:
        writer.close()


class GatedSink(Sink):
    """Defers every recipient (451) until opened: queued mail waits in the relay's spool."""

    def __init__(self) -> None:
        super().__init__(reply_for_rcpt=self._gate)
        self.open = False

    def _gate(self, ip: str, address: str) -> str | None:
        return None if self.open else "451 4.3.0 not yet"


@pytest.mark.timeout(180)
async def test_a_node_beats_drains_resumes_and_is_forgotten_once_down(
    redis, redis_server, server_cert, ca, tmp_path
):
    await add_sender(redis)
    _, api_key = await ApiKeys(redis, SystemClock()).add("alice")
    sink = GatedSink()
    submit_port, http_port = free_port(), free_port()
    async with sink.serving() as server:
        config = tmp_path / "relay.toml"
        write_config(
            config,
            redis_url=redis_server.url,
            server_cert=server_cert,
            submit_port=submit_port,
            sink_port=server.sockets[0].getsockname()[1],
            egress=("127.0.0.2", "127.0.0.3"),
            http_port=http_port,
            node=BEATS,
        )
        relay = await start_relay(config, submit_port, processes=2)
        try:
            await submit(submit_port, ca, 1)  # deferred by the sink: stays spooled
            node = await until_node(
                config, "node-a", lambda n: n["processes"] == 2 and n["spool_files"] == 1
            )
            assert node["state"] == "accepting"
            assert node["egress"] == ["127.0.0.2", "127.0.0.3"]
            assert node["spool_bytes"] == len(b"Subject: message 1\r\n\r\nmessage 1\r\n")
            assert node["beat_age"] < 2
            assert f"127.0.0.1:{submit_port} (implicit)" in node["listeners"]
            assert node["pid"] == relay.pid

            code, out, _ = await relay_cli(config, "node", "list")
            assert code == 0
            assert out.split()[:3] == ["node-a", node["version"], "2"]
            assert "accepting" in out and "127.0.0.2,127.0.0.3" in out

            code, out, _ = await relay_cli(config, "node", "drain", "node-a", "--reason", "kernel")
            assert code == 0 and out.startswith("draining node-a"), out
            await until_node(config, "node-a", lambda n: n["state"] == "draining", within=5)
            # Every process refuses new sessions (the kernel spreads them over both)...
            for _ in range(6):
                assert await greeting(submit_port, ca) == (
                    "421 4.3.2 Draining: try another server; closing connection"
                )
            # ...and the HTTP send API says to come back later.
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{http_port}",
                headers={"Authorization": f"Bearer {api_key}"},
                timeout=10,
            ) as http:
                sent = await http.post(
                    "/v1/messages",
                    json={
                        "from": "alice@example.org",
                        "to": ["r2@example.com"],
                        "subject": "hi",
                        "text": "Hello.",
                    },
                )
                ready = await http.get("/readyz")  # a load balancer sends elsewhere too
            assert sent.status_code == 503, sent.text
            assert sent.headers["Retry-After"]
            assert "4.3.2" in sent.text
            assert ready.status_code == 503 and ready.json()["problems"] == {"node": "draining"}

            # What it took before the drain is still delivered.
            sink.open = True
            (received,) = await sink.wait_for(1, timeout=30)
            assert b"message 1" in received.data
            await until_node(config, "node-a", lambda n: n["spool_files"] == 0)

            code, out, _ = await relay_cli(config, "node", "resume", "node-a")
            assert code == 0 and out.strip() == "node-a accepts mail again"
            await until_node(config, "node-a", lambda n: n["state"] == "accepting", within=5)
            await submit(submit_port, ca, 3)
            await sink.wait_for(2, timeout=30)

            code, _, err = await relay_cli(config, "node", "forget", "node-a")
            assert code == 1
            assert err.startswith("relay: node 'node-a' is accepting"), err

            # kill -9 of the supervisor: no last beat; the node shows down once it is silent
            # for 3 beats (its children stop by themselves, without beating).
            relay.send_signal(signal.SIGKILL)
            await relay.wait()
            await until_node(config, "node-a", lambda n: n["state"] == "down", within=10)
        finally:
            await stop_relay(relay)

    code, out, _ = await relay_cli(config, "node", "forget", "node-a", "--reason", "decommissioned")
    assert code == 0 and out.strip() == "forgot node node-a"
    assert "node-a" not in await nodes(config)
    entries = await redis.xrange("audit")
    audited = [
        (e[b"action"].decode(), e[b"subject"].decode(), e[b"reason"].decode())
        for _, e in entries
        if e[b"action"].startswith(b"node-")
    ]
    assert audited == [
        ("node-drain", "node:node-a", "kernel"),
        ("node-resume", "node:node-a", ""),
        ("node-forget", "node:node-a", "decommissioned"),
    ]
    assert all(e[b"actor"].startswith(b"operator:") for _, e in entries)


@pytest.mark.timeout(90)
async def test_a_node_stopped_cleanly_says_so_and_a_drain_outlives_a_restart(
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
        node=BEATS,
    )
    relay = await start_relay(config, submit_port)  # one process, no supervisor: it beats
    try:
        await until_node(config, "node-a", lambda n: n["processes"] == 1)
        assert (await relay_cli(config, "node", "drain", "node-a"))[0] == 0
        await until_node(config, "node-a", lambda n: n["state"] == "draining", within=5)
        assert (await greeting(submit_port, ca)).startswith("421 4.3.2 ")
    finally:
        assert await stop_relay(relay) == 0
    node = (await nodes(config))["node-a"]
    assert node["state"] == "stopped" and node["drain_asked"] is not None

    relay = await start_relay(config, submit_port, processes=2)
    try:  # drained until resumed, across the restart
        await until_node(config, "node-a", lambda n: n["state"] == "draining")
        assert (await greeting(submit_port, ca)).startswith("421 4.3.2 ")
    finally:
        assert await stop_relay(relay) == 0
    node = (await nodes(config))["node-a"]
    assert node["state"] == "stopped" and node["processes"] == 0
    code, out, _ = await relay_cli(config, "node", "forget", "node-a")
    assert code == 0, out


async def test_commands_on_an_unknown_node_say_so(redis_server, tmp_path, server_cert):
    config = tmp_path / "relay.toml"
    write_config(
        config,
        redis_url=redis_server.url,
        server_cert=server_cert,
        submit_port=free_port(),
        sink_port=free_port(),
    )
    code, out, _ = await relay_cli(config, "node", "list")
    assert code == 0 and out.startswith("no node has beaten yet")
    for action in ("drain", "resume", "forget"):
        code, _, err = await relay_cli(config, "node", action, "ghost")
        assert code == 1
        assert err.strip() == "relay: no node 'ghost' (see `relay node list`)"


@pytest.mark.timeout(60)
async def test_a_session_open_before_the_drain_is_refused_at_its_next_mail(redis, server_cert, ca):
    """In-process: the SMTP server reads the drain at connect and at MAIL, without Redis."""
    from relay.clock import FakeClock
    from relay.node.drain import DrainFlag
    from tests.support.submission import start_stack

    await add_sender(redis)
    drain = DrainFlag()
    stack, servers = await start_stack(redis, FakeClock(), server_cert, ca, draining=drain.is_set)
    try:
        context = ssl.create_default_context()
        ca.configure_trust(context)
        smtp = aiosmtplib.SMTP(
            hostname="127.0.0.1",
            port=stack.implicit_port,
            use_tls=True,
            tls_context=context,
            timeout=10,
        )
        await smtp.connect()
        await smtp.login("alice", PASSWORD)
        body = b"Subject: one\r\n\r\none\r\n"
        await smtp.sendmail("alice@example.org", ["bob@example.com"], body)
        drain.set(True)
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
            await smtp.sendmail("alice@example.org", ["bob@example.com"], body)
        assert refused.value.code == 421
        assert refused.value.message.startswith("4.3.2 Draining")
        await asyncio.sleep(0.1)
        assert not smtp.is_connected or smtp.transport is None or smtp.transport.is_closing()
        assert (await greeting(stack.implicit_port, ca)).startswith("421 4.3.2 ")
        drain.set(False)
        assert (await greeting(stack.implicit_port, ca)).startswith("220 ")
    finally:
        for server in servers:
            server.close()
        smtp.close()
