"""What operators read carries no raw internals: no epochs, no script return codes, no reprs."""

from __future__ import annotations

import re

import pytest

from quota import QuotaStore
from relay.abuse.factory import suspension_service
from relay.abuse.store import Suspension
from relay.cli.abuse import evidence_text, lift_refusal, render
from relay.cli.common import until
from relay.clock import SystemClock
from relay.config import Settings
from reputation import EscalationPolicy, Kind, NotAllowed, Status, Terms, check_lift, terms_for
from tests.conftest import add_sender
from tests.test_cli import relay
from tests.test_cli_untrusted import cfg, one_line_error  # noqa: F401 (cfg: a fixture)

DAY = 86400.0
NOW = 1_800_000_000.0  # 2027-01-15 08:00:00Z


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(12, "12s"), (90, "1m30s"), (2 * 3600 + 13 * 60, "2h13m"), (4 * DAY + 22.5 * 3600, "4d23h")],
)
def test_how_long_until_reads_like_the_smtp_replies(seconds: float, text: str) -> None:
    assert until(NOW + seconds, NOW) == text


def test_a_lift_before_the_minimum_term_names_the_time_and_the_way_past_it() -> None:
    terms = terms_for(Kind.ABUSE, 1, NOW, EscalationPolicy())
    with pytest.raises(NotAllowed) as refused:
        check_lift(status=Status.OPEN, terms=terms, by_operator=True, now=NOW + 3600)
    assert refused.value.not_before == NOW + 5 * DAY
    message = lift_refusal("ab12", refused.value, NOW + 3600)
    assert message == (
        "cannot lift ab12: offence 2: not before 2027-01-20 08:00:00Z (in 4d23h); to lift it"
        " earlier: relay suspension lift ab12 --force --reason TEXT (audited)"
    )
    assert not re.search(r"\d{9,}", message), "no epoch"


def test_evidence_reads_as_words_not_python() -> None:
    assert evidence_text(True) == "yes" and evidence_text(None) == "-"
    assert evidence_text(["127.0.0.2", "127.0.0.3"]) == "127.0.0.2, 127.0.0.3"
    assert evidence_text({"zone": "zen", "code": "127.0.0.2"}) == "zone=zen, code=127.0.0.2"
    assert evidence_text([]) == "none"
    shown = render(
        Suspension(
            id="ab12",
            account="alice",
            kind=Kind.REPUTATION,
            reason="IP listed",
            evidence={"ips": ["127.0.0.2"], "forced": False, "listing": {"zone": "zen"}},
            actor="system:monitor",
            created_at=NOW,
            terms=Terms(offence=1, user_may_lift=True, not_before=None, may_deny=False),
        )
    )
    assert "ips: 127.0.0.2\nforced: no\nlisting: zone=zen" in shown
    assert not any(mark in shown for mark in ("[", "{", "'", "True", "False"))


async def test_relay_suspension_lift_on_a_second_offence(redis, cfg, tmp_path):  # noqa: F811
    await add_sender(redis, "alice")
    settings = Settings(hostname="relay.test", spool={"dir": str(tmp_path / "spool")})
    quota = QuotaStore(redis, default_per_minute=100, per_recipient=100)
    service = suspension_service(redis, settings, SystemClock(), quota)
    first = await service.suspend("alice", Kind.ABUSE, "one", {}, actor="operator:eve")
    await service.lift(first.id, actor="operator:eve", reason="ok")
    second = await service.suspend("alice", Kind.ABUSE, "two", {}, actor="operator:eve")

    refused = one_line_error(
        relay(*cfg, "suspension", "lift", second.id, "--reason", "asked", cwd=tmp_path)
    )
    assert re.fullmatch(
        rf"relay: cannot lift {second.id}: offence 2: not before "
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ \(in (5d00h|4d23h)\); to lift it earlier: "
        rf"relay suspension lift {second.id} --force --reason TEXT \(audited\)",
        refused,
    ), refused
    forced = relay(
        *cfg, "suspension", "lift", second.id, "--force", "--reason", "false listing", cwd=tmp_path
    )
    assert forced.returncode == 0, forced.stderr
