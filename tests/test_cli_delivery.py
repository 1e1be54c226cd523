"""`relay ip` and the queue actions as an operator runs them: real processes, real Redis."""

from __future__ import annotations

import json

import pytest

from relay.clock import SystemClock
from relay.queue import Envelope, QueueStore
from tests.support.spool import temp_spool
from tests.test_cli import relay


@pytest.fixture
def workdir(tmp_path, redis_server):
    (tmp_path / "relay.toml").write_text(
        f'[redis]\nurl = "{redis_server.url}"\n'
        '[[delivery.egress]]\nip = "127.0.0.2"\nhelo = "out2.relay.test"\n'
        '[[delivery.egress]]\nip = "127.0.0.3"\nhelo = "out3.relay.test"\n'
    )
    return tmp_path


def run(workdir, *args: str):
    return relay("--config", "relay.toml", *args, cwd=workdir)


async def test_ip_disable_list_enable(workdir, redis):
    disabled = run(workdir, "ip", "disable", "127.0.0.2", "--reason", "listed at a big mailbox")
    assert disabled.returncode == 0, disabled.stderr
    listing = run(workdir, "ip", "list")
    assert "127.0.0.2" in listing.stdout and "disabled since" in listing.stdout
    assert "listed at a big mailbox" in listing.stdout
    assert "1 of 2 IP(s) in rotation" in listing.stdout
    states = json.loads(run(workdir, "ip", "list", "--json").stdout)
    assert [(s["ip"], s["state"]) for s in states] == [
        ("127.0.0.2", "disabled"),
        ("127.0.0.3", "healthy"),
    ]
    assert run(workdir, "ip", "enable", "127.0.0.2").stdout.strip() == "enabled 127.0.0.2"
    assert "2 of 2 IP(s) in rotation" in run(workdir, "ip", "list").stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ip", "disable", "10.9.9.9", "--reason", "x"], "not in the egress pool"),
        (["ip", "disable", "not-an-ip", "--reason", "x"], "not an IP address"),
        (["ip", "disable", "127.0.0.2", "--reason", "  "], "give a reason"),
        (["queue", "hold", "0000"], "no message '0000'"),
    ],
)
def test_operator_mistakes_are_one_line(workdir, args, message):
    result = run(workdir, *args)
    assert result.returncode == 1
    assert result.stderr.strip().startswith("relay: ") and message in result.stderr
    assert "Traceback" not in result.stderr


async def test_queue_hold_release_retry_delete(workdir, redis):
    queue = QueueStore(redis, SystemClock(), temp_spool())
    envelope = Envelope("a@sender.test", ("b@dest.test",), "alice")
    first = await queue.enqueue(envelope, b"Subject: one\r\n\r\nx\r\n")
    second = await queue.enqueue(envelope, b"Subject: two\r\n\r\nx\r\n")

    assert run(workdir, "queue", "hold", first).stdout.strip() == f"held {first}"
    assert "[HELD]" in run(workdir, "queue", "list").stdout
    shown = run(workdir, "queue", "show", first).stdout
    assert "held:       since" in shown and "attempts 0, held" in shown
    assert json.loads(run(workdir, "queue", "show", first, "--json").stdout)["held_at"]
    assert run(workdir, "queue", "release", first).stdout.strip() == f"released {first}"
    assert run(workdir, "queue", "retry", first).stdout.strip() == f"{first}: 1 job(s) due now"

    held = run(workdir, "queue", "hold", "--account", "alice")
    assert "held 2 message(s) of alice" in held.stdout
    refused = run(workdir, "queue", "release", second)
    assert refused.returncode == 1 and "release the account instead" in refused.stderr
    assert "released 2 message(s)" in run(workdir, "queue", "release", "--account", "alice").stdout
    assert run(workdir, "queue", "delete", second).stdout.strip() == f"deleted {second}"
    assert "deleted 1 message(s)" in run(workdir, "queue", "delete", "--account", "alice").stdout
    assert await queue.count() == 0
