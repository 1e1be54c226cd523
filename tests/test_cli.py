"""The `relay` command as an operator runs it: real processes, a real embedded Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

RELAY = [sys.executable, "-m", "relay"]


def relay(*args: str, cwd: Path, stdin: str = "", env: dict[str, str] | None = None):
    return subprocess.run(
        [*RELAY, *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), **(env or {})},
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "relay.toml").write_text(
        '[redis]\nembedded_dir = "var/redis"\n[tls]\nself_signed = true\n'
    )
    return tmp_path


def test_account_lifecycle_with_embedded_redis(workdir):
    cfg = ["--config", "relay.toml"]
    created = relay(*cfg, "account", "add", "alice", "--email", "a@example.com", cwd=workdir)
    assert created.returncode == 0, created.stderr
    assert "created account alice" in created.stdout
    assert created.stdout.count("password: ") == 1, "a generated password is printed once"
    added = relay(
        *cfg, "account", "add", "bob", "--password-stdin", cwd=workdir, stdin="a long password\n"
    )
    assert added.returncode == 0 and "password:" not in added.stdout

    listed = relay(*cfg, "account", "list", "--json", cwd=workdir)
    assert [a["login"] for a in json.loads(listed.stdout)] == ["alice", "bob"]
    shown = json.loads(relay(*cfg, "account", "show", "alice", "--json", cwd=workdir).stdout)
    assert shown["email"] == "a@example.com" and "password" not in shown

    duplicate = relay(*cfg, "account", "add", "alice", cwd=workdir)
    assert duplicate.returncode == 1
    assert duplicate.stderr.strip() == "relay: account 'alice' already exists"
    assert relay(*cfg, "account", "remove", "bob", cwd=workdir).returncode == 0
    missing = relay(*cfg, "account", "show", "bob", cwd=workdir)
    assert missing.returncode == 1 and "no account 'bob'" in missing.stderr
    assert "Traceback" not in missing.stderr
    queue = relay(*cfg, "queue", "list", cwd=workdir)
    assert queue.returncode == 0 and "0 message(s) in the queue" in queue.stdout


@pytest.mark.parametrize(
    "toml,expected",
    [
        ("bogus = 1\n", "bogus: unknown key"),
        ('[submission]\nmax_message_size = "50XB"\n', "submission.max_message_size: not a size"),
        ('[delivery]\nretry_interval = "soon"\n', "delivery.retry_interval: not a duration"),
        ('[[delivery.egress]]\nip = "300.1.1.1"\nhelo = "x"\n', "delivery.egress.0.ip: not an IP"),
        ("[submission]\nmax_recipients = 0\n", "submission.max_recipients:"),
        ('[submission.timeouts]\npre_auth = "0s"\n', "submission.timeouts.pre_auth: must be"),
        ("this is not toml", "invalid TOML"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(tmp_path, toml, expected):
    (tmp_path / "bad.toml").write_text(toml)
    result = relay("--config", "bad.toml", "account", "list", cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("relay: config error: "), result.stderr
    assert expected.replace("Value error, ", "") in lines[0], lines[0]


def test_bad_environment_override_is_named(tmp_path):
    (tmp_path / "ok.toml").write_text("")
    result = relay(
        "--config",
        "ok.toml",
        "queue",
        "list",
        cwd=tmp_path,
        env={"RELAY_SUBMISSION__MAX_RECIPIENTS": "many"},
    )
    assert result.returncode == 2
    assert "submission.max_recipients" in result.stderr and "Traceback" not in result.stderr


def test_missing_certificate_is_named_at_run(tmp_path):
    (tmp_path / "relay.toml").write_text('[tls]\ncert = "missing.pem"\nkey = "missing.pem"\n')
    result = relay("--config", "relay.toml", "run", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "relay: config error: tls.cert: file not found: missing.pem"
    )


def test_missing_config_file(tmp_path):
    result = relay("--config", "nope.toml", "run", cwd=tmp_path)
    assert result.returncode == 2 and "nope.toml: config file not found" in result.stderr


def test_dns_servers_get_port_53_by_default(monkeypatch):
    from relay.config import load_settings

    monkeypatch.setenv(
        "RELAY_DNS__SERVERS", '["10.0.0.1", "::1", "[2001:db8::1]", "127.0.0.1:5353"]'
    )
    servers = [str(s) for s in load_settings(None).dns.servers]
    assert servers == ["10.0.0.1:53", "[::1]:53", "[2001:db8::1]:53", "127.0.0.1:5353"]


def test_plans_and_usage(workdir):
    cfg = ["--config", "relay.toml"]
    created = relay(*cfg, "account", "add", "carol", "--daily", "500", cwd=workdir)
    assert created.returncode == 0 and "500 recipients per rolling 24 h" in created.stdout
    added = relay(
        *cfg,
        "plan",
        "add",
        "carol",
        "--daily",
        "1000",
        "--per-minute",
        "20",
        "--expires",
        "2099-01-01",
        cwd=workdir,
    )
    assert added.returncode == 0, added.stderr
    assert "1000/24h, 20/min, until 2099-01-01 00:00:00Z" in added.stdout
    plans = json.loads(relay(*cfg, "plan", "list", "carol", "--json", cwd=workdir).stdout)
    assert sorted(p["daily"] for p in plans) == [500, 1000] and all(p["active"] for p in plans)

    usage = json.loads(relay(*cfg, "usage", "carol", "--json", cwd=workdir).stdout)
    assert (usage["used"], usage["daily"], usage["remaining"]) == (0, 1500, 1500)
    assert usage["state"] == "active" and usage["per_minute"] == 120  # 100 (default) + 20
    text = relay(*cfg, "usage", "carol", cwd=workdir).stdout
    assert "last 24 h:    0 of 1500 recipients (1500 left)" in text

    first = next(p["id"] for p in plans if p["daily"] == 500)
    assert relay(*cfg, "plan", "remove", "carol", first, cwd=workdir).returncode == 0
    gone = relay(*cfg, "plan", "remove", "carol", first, cwd=workdir)
    assert gone.returncode == 1 and f"no plan '{first}'" in gone.stderr


@pytest.mark.parametrize(
    "args,message",
    [
        (["plan", "add", "nobody", "--daily", "10"], "no account 'nobody'"),
        (["plan", "add", "dave", "--daily", "0"], "daily quota must be positive: 0"),
        (["plan", "add", "dave", "--daily", "-3"], "daily quota must be positive: -3"),
        (
            ["plan", "add", "dave", "--daily", "5", "--starts", "tomorrow"],
            "--starts: not an ISO date or time: 'tomorrow'",
        ),
        (
            [
                "plan",
                "add",
                "dave",
                "--daily",
                "5",
                "--starts",
                "2030-01-02",
                "--expires",
                "2030-01-01",
            ],
            "a plan must expire after it starts",
        ),
        (["usage", "nobody"], "no account 'nobody'"),
        (["account", "add", "erin", "--daily", "-1"], "--daily must not be negative: -1"),
    ],
)
def test_bad_plan_input_is_refused_and_changes_nothing(workdir, args, message):
    cfg = ["--config", "relay.toml"]
    assert relay(*cfg, "account", "add", "dave", "--daily", "0", cwd=workdir).returncode == 0
    result = relay(*cfg, *args, cwd=workdir)
    assert result.returncode == 1 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert json.loads(relay(*cfg, "plan", "list", "dave", "--json", cwd=workdir).stdout) == []
