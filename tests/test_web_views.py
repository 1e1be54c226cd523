"""The customer's banner (contract 003: a warning on the home page while suspended) and
the volume figures, as pure functions of the account's state."""

from __future__ import annotations

from quota import Usage
from relay.abuse.store import Suspension
from relay.web.views import AccountState, banner, usage_view
from reputation import EscalationPolicy, Kind, Status, terms_for

NOW = 1_800_000_000.0


def usage(state: str = "active", used: int = 10, daily: int = 100) -> Usage:
    return Usage(
        used=used,
        daily=daily,
        per_minute_used=0,
        per_minute=100,
        state=state,
        next_free_at=NOW + 3600 if used else None,
        hourly=(),
        plans=(),
        active_plans=frozenset(),
    )


def suspension(kind: Kind, earlier: int) -> Suspension:
    return Suspension(
        id="s1",
        account="alice",
        kind=kind,
        reason="listed",
        evidence={},
        actor="system:monitor",
        created_at=NOW,
        terms=terms_for(kind, earlier, NOW, EscalationPolicy()),
    )


def test_no_banner_while_sending_is_allowed() -> None:
    assert banner(AccountState(usage(), [], False), "support") is None


def test_first_offence_says_change_the_password() -> None:
    b = banner(
        AccountState(usage("suspended (reputation)"), [suspension(Kind.REPUTATION, 0)], False),
        "support",
    )
    assert b is not None and b["reason"] == "reputation: listed"
    assert "change your password" in b["todo"]


def test_later_offence_needs_support() -> None:
    b = banner(AccountState(usage(), [suspension(Kind.ABUSE, 1)], False), "help@host")
    assert b is not None and "only support can lift it" in b["todo"] and "help@host" in b["todo"]


def test_quota_used_up_lifts_by_itself() -> None:
    b = banner(AccountState(usage("suspended (quota)", 100, 100), [], False), "support")
    assert b is not None and "quota of 100" in b["reason"] and "by itself" in b["todo"]


def test_refused_for_good() -> None:
    s = suspension(Kind.ABUSE, 2).closed(Status.DENIED, at=NOW, by="op", reason="spam")
    b = banner(AccountState(usage("suspended (abuse, reinstatement refused)"), [], True), "support")
    assert b is not None and "refused" in b["reason"]
    assert s.status is Status.DENIED


def test_volume_as_the_progress_bar_shows_it() -> None:
    view = usage_view(usage(used=150, daily=200), NOW)
    assert (view["percent"], view["remaining"], view["next_free_in"]) == (75, 50, "1h00m")
    assert usage_view(usage(used=300, daily=200), NOW)["percent"] == 100
