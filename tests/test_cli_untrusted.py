"""The operator commands against hostile input: one-line errors, clean output, a true actor.

Real processes as an operator runs them (tests/test_cli.py), on the test Redis."""

from __future__ import annotations

import json
import os
import pwd
from pathlib import Path

import pytest

from relay.abuse.audit import AuditLog
from relay.abuse.store import Suspension, SuspensionStore
from relay.clock import SystemClock
from reputation import Kind, Terms
from tests.conftest import add_sender
from tests.test_cli import relay
from tests.test_complaints import ORIGINAL, arf

ME = f"operator:{pwd.getpwuid(os.geteuid()).pw_name}"
TERMINAL_TRICKS = ("\x1b", "\x9b", "\x07", "\u202e", "\x00")


@pytest.fixture
def cfg(tmp_path: Path, redis_server) -> list[str]:
    (tmp_path / "relay.toml").write_text(
        f'hostname = "relay.test"\n[redis]\nurl = "{redis_server.url}"\n'
    )
    return ["--config", "relay.toml"]


def one_line_error(result) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("relay: "), result.stderr
    return lines[0]


def nested_report(depth: int) -> bytes:
    inner = ORIGINAL
    for _ in range(depth):
        inner = b"From: fbl@isp.example\r\nContent-Type: message/rfc822\r\n\r\n" + inner
    return inner


@pytest.mark.parametrize(
    "content,expected",
    [
        (nested_report(3000), "more than 100 multipart or message parts"),
        (b"", "the complaint is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\xff\xfe", "binary data"),
        (b"just some words\nno headers here\n", "does not start with headers"),
    ],
    ids=["nested-3000", "empty", "binary", "not-mail"],
)
def test_unreadable_reports_end_in_one_line(redis, cfg, tmp_path, content, expected):
    (tmp_path / "report.eml").write_bytes(content)
    result = relay(*cfg, "complaint", "add", "--file", "report.eml", cwd=tmp_path)
    assert expected in one_line_error(result)


def test_a_missing_report_file_is_one_line(cfg, tmp_path):
    result = relay(*cfg, "complaint", "add", "--file", "nope.eml", cwd=tmp_path)
    assert "cannot read nope.eml" in one_line_error(result)


def test_a_non_utf8_report_is_read(redis, cfg, tmp_path):
    latin1 = arf(ORIGINAL.replace(b"Subject: Cheap pills", b"Subject: Pr\xe9cis \xff\x1b[2J"))
    (tmp_path / "report.eml").write_bytes(latin1.replace(b"fbl@isp", b"J\xe9r\xf4me@isp"))
    result = relay(*cfg, "complaint", "add", "--file", "report.eml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "queued for review" in result.stdout and "Traceback" not in result.stderr
    shown = relay(*cfg, "complaint", "list", cwd=tmp_path)
    assert "J\ufffdr\ufffdme@isp.example" in shown.stdout
    assert not any(trick in shown.stdout for trick in TERMINAL_TRICKS)


@pytest.mark.parametrize(
    "option,expected",
    [
        (["--subject", "a\r\nBcc: x@y.example"], "the subject must be one line"),
        (["--subject", "a\nBcc: x@y.example"], "the subject must be one line"),
        (["--from", "a@b.example\r\nBcc: x@y.example"], "invalid address"),
        (["--to", "c@d.example\nBcc: x@y.example"], "invalid address"),
    ],
    ids=["subject-crlf", "subject-lf", "from-crlf", "to-lf"],
)
def test_send_refuses_header_injection(tmp_path, option, expected):
    (tmp_path / "relay.toml").write_text("")
    result = relay(
        "--config",
        "relay.toml",
        "send",
        "--login",
        "alice",
        "--to",
        "bob@example.com",
        *option,
        "--password-stdin",
        "--server",
        "127.0.0.1:1",  # never reached: refused before connecting
        cwd=tmp_path,
        stdin="pw\n",
    )
    assert expected in one_line_error(result)


HOSTILE_REPORT = arf(
    ORIGINAL.replace(b"Subject: Cheap pills", b"Subject: \x1b[2J\x1b[1;1HCheap \xe2\x80\xaepills"),
    reporter=b"\x1b]0;pwned\x07fbl@isp.example\x1b[8m",
).replace(b"Source-IP: 127.0.0.3", b"Source-IP: 127.0.0.3\x1b[31m\xc2\x9b2J")


async def test_control_characters_are_stripped_in_evidence_and_output(redis, cfg, tmp_path):
    await add_sender(redis, "promo")
    (tmp_path / "report.eml").write_bytes(HOSTILE_REPORT)
    added = relay(*cfg, "complaint", "add", "promo", "--file", "report.eml", cwd=tmp_path)
    assert added.returncode == 0, added.stderr
    queued = relay(*cfg, "complaint", "add", "--file", "report.eml", cwd=tmp_path)
    assert queued.returncode == 0, queued.stderr

    (s,) = await SuspensionStore(redis).of_account("promo")
    stored = json.dumps(s.as_dict(), ensure_ascii=False)
    assert not any(trick in stored for trick in TERMINAL_TRICKS), stored
    assert s.reason == "spam complaint (abuse) from fbl@isp.example"
    assert s.evidence["fields"]["source-ip"] == "127.0.0.3"
    assert "Subject: Cheap pills" in s.evidence["original_headers"]
    entries = await AuditLog(redis, SystemClock()).entries()
    logged = json.dumps([e.as_dict() for e in entries], ensure_ascii=False)
    assert not any(trick in logged for trick in TERMINAL_TRICKS), logged

    review_id = queued.stdout.split()[1]
    for command in (
        ["suspension", "show", s.id],
        ["complaint", "show", review_id],
        ["complaint", "list"],
    ):
        shown = relay(*cfg, *command, cwd=tmp_path)
        assert shown.returncode == 0, shown.stderr
        assert "fbl@isp.example" in shown.stdout
        assert not any(trick in shown.stdout for trick in TERMINAL_TRICKS), command


async def test_records_stored_raw_are_cleaned_on_display(redis, cfg, tmp_path):
    """Written before intake cleaning, or by another writer: the display side cleans too."""
    await add_sender(redis, "promo")
    hostile = "listed\x1b[2J\r\n2026-01-01 00:00:00Z  operator:eve  lift  \u202eforged"
    store = SuspensionStore(redis)
    await store.save(
        Suspension(
            id=store.new_id(),
            account="promo",
            kind=Kind.REPUTATION,
            reason=hostile,
            evidence={"txt": hostile},
            actor="system:monitor",
            created_at=SystemClock().now(),
            terms=Terms(offence=1, user_may_lift=True, not_before=None, may_deny=False),
        )
    )
    raw = {"at": "1.0", "actor": "system:monitor", "action": "suspend", "reason": hostile}
    await redis.xadd("audit", {**raw, "account": "promo", "subject": "x", "evidence": "{}"})
    await redis.xadd("audit:{promo}", {**raw, "account": "promo", "subject": "x", "evidence": "{}"})
    for command, rows in (
        (["suspension", "list"], 2),
        (["suspension", "show", (await store.of_account("promo"))[0].id], None),
        (["audit"], 1),
        (["account", "history", "promo"], 4),
    ):
        shown = relay(*cfg, *command, cwd=tmp_path)
        assert shown.returncode == 0, shown.stderr
        assert not any(trick in shown.stdout for trick in TERMINAL_TRICKS), command
        assert "listed" in shown.stdout and "forged" in shown.stdout
        if rows is not None:
            assert len(shown.stdout.splitlines()) == rows, (command, shown.stdout)


async def test_the_actor_is_the_os_user_not_the_environment(redis, cfg, tmp_path):
    await add_sender(redis, "promo")
    spoofed = {"LOGNAME": "mallory", "USER": "mallory", "LNAME": "mallory", "USERNAME": "mallory"}
    added = relay(
        *cfg, "suspension", "add", "promo", "--reason", "unpaid", cwd=tmp_path, env=spoofed
    )
    assert added.returncode == 0, added.stderr
    (s,) = await SuspensionStore(redis).of_account("promo")
    (entry,) = await AuditLog(redis, SystemClock()).entries()
    assert s.actor == entry.actor == ME != "operator:mallory"

    flag = relay(
        *cfg, "suspension", "lift", s.id, "--reason", "x", "--operator", "mallory", cwd=tmp_path
    )
    assert "--operator is no longer accepted: the audit log records the OS user" in (
        one_line_error(flag)
    )
    assert len(await AuditLog(redis, SystemClock()).entries()) == 1, "nothing was lifted"
