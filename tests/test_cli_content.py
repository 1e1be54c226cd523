"""`relay quarantine`, `relay list`, `relay report content` as an operator runs them."""

from __future__ import annotations

import json
import socket

from quota import Plan, QuotaStore
from relay.clock import SystemClock
from relay.config import load_settings
from relay.content.factory import quarantine_store
from relay.content.quarantine import Held
from relay.content.stats import ContentStats
from relay.queue import QueueStore
from tests.support.quarantine import hold
from tests.test_cli import relay as run_relay_command

BODY = b"From: alice@example.org\r\nSubject: Weekly offer\r\n\r\nBuy.\r\n"


def relay(*args: str, cwd):
    return run_relay_command(*args, cwd=cwd, env={"RELAY_CONFIG": "relay.toml"})


def workdir_for(tmp_path, redis_server):
    (tmp_path / "relay.toml").write_text(
        f'[redis]\nurl = "{redis_server.url}"\n[spool]\ndir = "{tmp_path / "spool"}"\n'
        'orphan_grace = "0s"\n'
    )
    return tmp_path


async def held(redis, tmp_path, kind: Held) -> str:
    settings = load_settings(tmp_path / "relay.toml")
    clock = SystemClock()
    queue = QueueStore(redis, clock, QueueStore.from_settings(redis, clock, settings).spool)
    assert queue.node == socket.gethostname()
    return await hold(quarantine_store(redis, settings, clock, queue), kind, body=BODY)


async def test_quarantine_commands(redis, redis_server, tmp_path):
    cwd = workdir_for(tmp_path, redis_server)
    await QuotaStore(redis, default_per_minute=100, per_recipient=100).add_plan(
        "alice", Plan("p", daily=100, per_minute=100)
    )
    spam, malware = await held(redis, cwd, Held.SPAM), await held(redis, cwd, Held.MALWARE)
    listed = relay("quarantine", "list", cwd=cwd)
    assert listed.returncode == 0, listed.stderr
    assert "2 message(s) in quarantine" in listed.stdout and "Weekly offer" in listed.stdout
    shown = json.loads(relay("quarantine", "show", spam, "--json", cwd=cwd).stdout)
    assert shown["kind"] == "spam" and shown["recipients"] == ["bob@example.com"]

    refused = relay("quarantine", "release", malware, cwd=cwd)
    assert refused.returncode == 1 and "add --malware" in refused.stderr
    released = relay("quarantine", "release", spam, cwd=cwd)
    assert released.returncode == 0 and f"queued as {spam}" in released.stdout
    again = relay("quarantine", "release", spam, cwd=cwd)
    assert again.returncode == 1
    assert again.stderr.strip() == f"relay: no quarantined message '{spam}'"

    spool_check = relay("spool", "check", "--json", cwd=cwd)
    report = json.loads(spool_check.stdout)
    assert report["orphans"] == [], "a quarantined body is not an orphan"

    deleted = relay("quarantine", "delete", malware, cwd=cwd)
    assert deleted.returncode == 0 and not (cwd / "spool" / malware[-2:] / malware).exists()
    audit = relay("audit", "--account", "alice", "--json", cwd=cwd)
    actions = [e["action"] for e in json.loads(audit.stdout)]
    assert actions == ["quarantine-release", "quarantine-delete"]


async def test_list_commands(redis_server, tmp_path):
    cwd = workdir_for(tmp_path, redis_server)
    added = relay(
        "list", "add", "--global", "deny", "domain", "Spam.Example", "--reason", "abuse", cwd=cwd
    )
    assert added.returncode == 0 and "global: deny domain spam.example" in added.stdout
    relay("list", "add", "--account", "alice", "allow", "recipient", "x@spam.example", cwd=cwd)
    shown = json.loads(relay("list", "show", "--json", cwd=cwd).stdout)
    assert [(e["account"], e["action"], e["value"]) for e in shown] == [
        ("alice", "allow", "x@spam.example"),
        ("", "deny", "spam.example"),
    ]
    bad = relay("list", "add", "--global", "deny", "domain", "a@b", cwd=cwd)
    assert bad.returncode == 1 and bad.stderr.startswith("relay: not a domain")
    assert relay("list", "remove", "--global", "domain", "spam.example", cwd=cwd).returncode == 0
    gone = relay("list", "remove", "--global", "domain", "spam.example", cwd=cwd)
    assert gone.returncode == 1 and "no domain entry" in gone.stderr


async def test_report_content(redis, redis_server, tmp_path):
    cwd = workdir_for(tmp_path, redis_server)
    stats = ContentStats(redis)
    await stats.malware("alice", "Test.EICAR.NDB", 1000.0, 86400)
    await stats.malware("bob", "Test.EICAR.NDB", 1000.0, 86400)
    await stats.spam("alice", "quarantine")
    await held(redis, cwd, Held.SPAM)
    out = relay("report", "content", "--json", cwd=cwd)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["viruses"]["Test.EICAR.NDB"] == {"total": 2, "accounts": {"alice": 1, "bob": 1}}
    assert report["spam"] == {"alice": {"quarantine": 1}}
    assert report["quarantine"]["by_kind"]["spam"] == {"messages": 1, "bytes": len(BODY)}
    text = relay("report", "content", cwd=cwd).stdout
    assert "Test.EICAR.NDB: 2 (alice 1, bob 1)" in text
