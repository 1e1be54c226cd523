"""The retry schedule and the per-attempt plan: pure, no servers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quota import Duration
from relay.delivery.attempt import after_attempt
from relay.delivery.outcome import Disposition, RecipientOutcome
from relay.delivery.schedule import RetrySchedule
from relay.errors import InvalidInput

T0 = 1_800_000_000.0
DEFAULT = RetrySchedule()


def outcome(rcpt: str, disposition: Disposition, code: int = 451) -> RecipientOutcome:
    status = {Disposition.DELIVERED: "2.0.0", Disposition.TRANSIENT: "4.3.0"}.get(
        disposition, "5.1.1"
    )
    return RecipientOutcome(rcpt, disposition, code, status, "text", "mx.test", "127.0.0.2", False)


def test_defaults_are_the_contract() -> None:
    assert RetrySchedule.parse("15m", "7d", "60m") == DEFAULT
    assert str(DEFAULT) == "every 15m for 7d, delay notice after 1h"
    assert DEFAULT.attempts_until_expiry() == 673  # 0, 15m, ..., 7d


@pytest.mark.parametrize("bad", [("0s", "7d", "1h"), ("15m", "0s", "1h")])
def test_zero_interval_or_age_is_refused(bad: tuple[str, str, str]) -> None:
    with pytest.raises(InvalidInput):
        RetrySchedule.parse(*bad)


def test_next_attempt_is_one_interval_later_and_the_last_one_is_at_expiry() -> None:
    assert DEFAULT.next_attempt(T0, T0) == T0 + 900
    expiry = T0 + 7 * 86400
    assert DEFAULT.next_attempt(expiry - 60, T0) == expiry
    assert DEFAULT.next_attempt(expiry, T0) is None
    assert DEFAULT.next_attempt(expiry + 1, T0) is None


def test_held_time_does_not_count_towards_the_age() -> None:
    expiry = T0 + 7 * 86400
    assert DEFAULT.next_attempt(expiry, T0, held_for=3600) == expiry + 900
    assert DEFAULT.expires_at(T0, held_for=3600) == expiry + 3600
    assert not DEFAULT.delay_notice_due(T0 + 3600, T0, held_for=1)
    assert DEFAULT.delay_notice_due(T0 + 3601, T0, held_for=1)


@given(
    interval=st.integers(1, 5000),
    intervals=st.integers(0, 700),
    rest=st.floats(0, 1, exclude_max=True),
)
def test_a_message_that_always_fails_gets_the_promised_attempts(
    interval: int, intervals: int, rest: float
) -> None:
    max_age = max(1, interval * intervals + int(rest * interval))
    schedule = RetrySchedule(Duration(interval), Duration(max_age), Duration(0))
    now, attempts = T0, 1
    while (later := schedule.next_attempt(now, T0)) is not None:
        assert now < later <= now + interval
        now, attempts = later, attempts + 1
    assert now == T0 + max_age
    assert attempts == schedule.attempts_until_expiry()


def test_plan_sorts_recipients_and_schedules_the_retry() -> None:
    plan = after_attempt(
        [
            outcome("ok@x", Disposition.DELIVERED, 250),
            outcome("later@x", Disposition.TRANSIENT),
            outcome("gone@x", Disposition.PERMANENT, 550),
        ],
        now=T0,
        created_at=T0,
        schedule=DEFAULT,
    )
    assert [o.recipient for o in plan.delivered] == ["ok@x"]
    assert [o.recipient for o in plan.failed] == ["gone@x"]
    assert plan.pending == ("later@x",) and plan.retry_at == T0 + 900
    assert plan.error == "451 4.3.0 text"
    assert not plan.done and not plan.delay_notice and not plan.expired


def test_plan_without_pending_recipients_is_done() -> None:
    plan = after_attempt(
        [outcome("ok@x", Disposition.DELIVERED, 250)], now=T0, created_at=T0, schedule=DEFAULT
    )
    assert plan.done and plan.retry_at is None and plan.error == ""


@pytest.mark.parametrize(
    ("age", "notified", "expected"),
    [(3599, False, False), (3600, False, True), (7200, False, True), (7200, True, False)],
)
def test_delay_notice_is_due_once_past_the_threshold(
    age: float, notified: bool, expected: bool
) -> None:
    plan = after_attempt(
        [outcome("later@x", Disposition.TRANSIENT)],
        now=T0 + age,
        created_at=T0,
        schedule=DEFAULT,
        delay_notified=notified,
    )
    assert plan.delay_notice is expected


def test_no_delay_notice_when_nothing_is_pending() -> None:
    plan = after_attempt(
        [outcome("gone@x", Disposition.PERMANENT, 550)],
        now=T0 + 7200,
        created_at=T0,
        schedule=DEFAULT,
    )
    assert not plan.delay_notice and plan.done


def test_pending_recipients_expire_at_max_age() -> None:
    plan = after_attempt(
        [outcome("later@x", Disposition.TRANSIENT), outcome("gone@x", Disposition.PERMANENT)],
        now=T0 + 7 * 86400,
        created_at=T0,
        schedule=DEFAULT,
    )
    assert plan.done and [o.recipient for o in plan.expired] == ["later@x"]
    assert [o.recipient for o in plan.failed] == ["gone@x"]
    assert not plan.delay_notice, "a failure notice, not a delay notice"
