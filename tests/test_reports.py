"""Activity reports: hourly counts in Redis summed over 24 h and 30 days; the pure shaping;
the audit CSV (no formula injection) and the 24 h chart."""

from __future__ import annotations

import csv
import io

from relay.abuse.audit import AuditEntry
from relay.reports import ActivityLog, Outcome, account_outcomes, ip_volumes, top_senders
from relay.web.actions import audit_csv
from relay.web.chart import hourly_svg

NOW = 1_800_000_000.0


async def test_periods_sum_the_hours_they_cover(redis) -> None:
    log = ActivityLog(redis)
    await log.record(
        "alice",
        [
            Outcome("delivered", "127.0.0.2", "a@x.example", "250 2.0.0 ok"),
            Outcome("bounced", "127.0.0.2", "b@x.example", "550 5.1.1 no such user"),
        ],
        NOW,
    )
    await log.record("alice", [Outcome("delivered", "127.0.0.3", "c@y", "250 ok")], NOW - 2 * 86400)
    await log.record("bob", [Outcome("deferred", None, "d@z", "451 later")], NOW - 40 * 86400)
    day = await log.totals(NOW, "24h")
    month = await log.totals(NOW, "30d")
    assert day.of("a") == {"alice": {"delivered": 1, "deferred": 0, "bounced": 1}}
    assert month.of("a")["alice"]["delivered"] == 2
    assert "bob" not in month.of("a")
    assert ip_volumes(month, ["127.0.0.2", "127.0.0.4"]) == [
        {"ip": "127.0.0.2", "delivered": 1, "deferred": 0, "bounced": 1, "refused": 1},
        {"ip": "127.0.0.3", "delivered": 1, "deferred": 0, "bounced": 0, "refused": 0},
        {"ip": "127.0.0.4", "delivered": 0, "deferred": 0, "bounced": 0, "refused": 0},
    ]
    assert account_outcomes(day) == [
        {"account": "alice", "delivered": 1, "deferred": 0, "bounced": 1}
    ]


def test_top_senders_most_first_ties_by_login() -> None:
    ranked = top_senders({"b": 5, "a": 5, "c": 9, "idle": 0}, limit=2)
    assert ranked == [{"account": "c", "recipients": 9}, {"account": "a", "recipients": 5}]


def test_audit_csv_never_starts_a_cell_with_a_formula() -> None:
    entry = AuditEntry(1.0, "operator:x@web", "lift", "alice", "s1", '=HYPERLINK("x")', {})
    rows = list(csv.reader(io.StringIO(audit_csv([entry]))))
    assert rows[0][:3] == ["at", "actor", "action"]
    assert rows[1][5] == '\'=HYPERLINK("x")'


def test_chart_has_a_bar_per_hour_with_its_count() -> None:
    svg = hourly_svg([(NOW + 3600 * i, i) for i in range(24)])
    assert svg.startswith("<svg") and svg.count("<rect") == 24
    assert "23</title>" in svg and "max 23/h" in svg


async def test_recent_outcomes_newest_first_with_the_remote_reply(redis) -> None:
    log = ActivityLog(redis)
    for n in range(60):
        await log.record(
            "alice", [Outcome("bounced", "127.0.0.2", f"r{n}@x", f"550 5.1.1 n{n}")], NOW + n
        )
    recent = await log.recent("alice")
    assert len(recent) == 50
    assert recent[0] == {
        "at": NOW + 59,
        "outcome": "bounced",
        "recipient": "r59@x",
        "reply": "550 5.1.1 n59",
    }


async def test_buffered_log_writes_once_a_flush_and_loses_nothing(redis) -> None:
    log = ActivityLog(redis, flush_every=60.0)
    for n in range(5):
        await log.record("alice", [Outcome("delivered", "127.0.0.2", f"r{n}@x", "250 ok")], NOW)
    assert (await log.totals(NOW, "24h")).counts == {}  # nothing written yet
    await log.flush()
    assert (await log.totals(NOW, "24h")).of("a")["alice"]["delivered"] == 5
    assert [r["recipient"] for r in await log.recent("alice")][:2] == ["r4@x", "r3@x"]
