"""What `configure_logging` writes: one event per line, the shape the operator's tools read."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from relay.config import LogSettings
from relay.logging import configure_logging


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    mail_level = logging.getLogger("mail.log").level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("mail.log").setLevel(mail_level)
    structlog.reset_defaults()


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_one_object_per_line_with_event_and_fields() -> None:
    out = io.StringIO()
    configure_logging(LogSettings(format="json", level="info"), stream=out)
    log = structlog.get_logger("relay.submission")

    log.info("message.accepted", account="acme", recipients=3, size=1234)
    log.debug("too.detailed")  # below the level
    logging.getLogger("asyncio").warning("loop is %s", "slow")
    logging.getLogger("mail.log").info("('127.0.0.1', 4321) >> b'EHLO x'")  # noisy: dropped

    first, second = lines(out)
    assert first["event"] == "message.accepted"
    assert (first["account"], first["recipients"], first["size"]) == ("acme", 3, 1234)
    assert first["level"] == "info"
    assert first["logger"] == "relay.submission"
    assert dt.datetime.fromisoformat(first["timestamp"].replace("Z", "+00:00")).tzinfo
    assert (second["event"], second["level"], second["logger"]) == (
        "loop is slow",
        "warning",
        "asyncio",
    )


def test_debug_level_shows_aiosmtpd_commands() -> None:
    out = io.StringIO()
    configure_logging(LogSettings(format="json", level="debug"), stream=out)
    logging.getLogger("mail.log").info("peer >> EHLO")
    structlog.get_logger().debug("queue.polled")
    assert [line["event"] for line in lines(out)] == ["peer >> EHLO", "queue.polled"]


def test_password_fields_are_redacted() -> None:
    out = io.StringIO()
    configure_logging(LogSettings(format="json", level="info"), stream=out)
    structlog.get_logger().warning("auth.failed", account="acme", password="hunter2")
    assert "hunter2" not in out.getvalue()
    assert lines(out)[0]["password"] == "[redacted]"


def test_exception_is_part_of_the_json_line() -> None:
    out = io.StringIO()
    configure_logging(LogSettings(format="json", level="info"), stream=out)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        structlog.get_logger().exception("delivery.crashed")
    [line] = lines(out)
    assert line["event"] == "delivery.crashed"
    assert "RuntimeError: boom" in line["exception"]


def test_reconfiguring_replaces_the_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging(LogSettings(format="json", level="info"), stream=first)
    configure_logging(LogSettings(format="console", level="info"), stream=second)
    structlog.get_logger().info("relay.started", listeners=2)
    assert first.getvalue() == ""
    text = second.getvalue()
    assert text.count("\n") == 1
    assert "relay.started" in text and "listeners=2" in text
    assert "\x1b[" not in text  # no colours when not writing to a terminal


def test_records_skip_the_caller_and_process_lookups_no_line_shows() -> None:
    """Per record the stdlib would walk the stack for the caller, call getpid twice and
    name the thread; no line shows any of it, so it is not looked up (same lines)."""
    out = io.StringIO()
    configure_logging(LogSettings(format="json", level="info"), stream=out)
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    keep = Keep()
    logging.getLogger().addHandler(keep)
    try:
        structlog.get_logger("relay.delivery").info("delivery.session", reused=True)
    finally:
        logging.getLogger().removeHandler(keep)
    (record,) = seen
    assert (record.lineno, record.process, record.thread) == (0, None, None)
    (line,) = lines(out)
    assert set(line) == {"event", "reused", "logger", "level", "timestamp"}
