"""Shaping rules as data: parsing with errors that name the rule and key, which rule a
destination gets, reactions, the retry curve; the shipped starter file loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from quota import Duration, RateSpec
from relay.config import DeliverySettings
from relay.delivery.schedule import RetrySchedule
from relay.delivery.shaping import load_shaping, parse_shaping
from relay.delivery.shaping_source import ShapingSource, request_reload
from relay.errors import ConfigError

DELIVERY = DeliverySettings()
STARTER = Path(__file__).parent.parent / "config" / "shaping.toml"

RULES = """
[[rule]]
name = "default"
domains = ["*"]
max_messages_per_connection = 7
[[rule.reactions]]
code = 421
text = "too many"
action = "slow"
rate = "10/min"
duration = "30m"

[[rule]]
name = "google"
domains = ["gmail.com"]
mx = [".google.com"]
max_connections_per_ip = 5
rate_per_ip = ["20/min", "600/h"]
retry = ["5m", "10m", "1h"]
tls = "verify"
[[rule.reactions]]
status = "4.7.28"
action = "move"
duration = "1h"

[[rule]]
name = "exact-host"
mx = ["mx.example.net"]
"""


def test_a_destination_gets_its_domain_rule_then_its_mx_rule_then_the_default() -> None:
    shaping = parse_shaping(RULES, DELIVERY)
    assert shaping.rule_for("GMAIL.com.").name == "google"
    hosted = shaping.rule_for("corp.example", ["alt1.aspmx.l.google.com"])
    assert hosted.name == "google"
    assert shaping.rule_for("a.test", ["mx.example.net"]).name == "exact-host"
    assert shaping.rule_for("b.test", ["a.mx.example.net"]).name == "exact-host"
    assert shaping.rule_for("c.test", ["notgoogle.com"]).name == "default"
    assert shaping.rule_for("c.test", ["google.com.evil.test"]).name == "default"


def test_unset_keys_come_from_the_default_rule_then_the_settings() -> None:
    shaping = parse_shaping(RULES, DELIVERY)
    google = shaping.rule_for("gmail.com")
    assert google.max_messages_per_connection == 7  # from "*"
    assert google.idle_timeout == DELIVERY.session_idle  # from [delivery]
    assert google.rates == (RateSpec.parse("20/min"), RateSpec.parse("600/h"))
    assert google.retry == (Duration(300), Duration(600), Duration(3600))
    assert google.tls == "verify"
    assert [r.action for r in google.reactions] == ["move", "slow"]  # its own first
    default = shaping.default
    assert default.retry == (DELIVERY.retry_interval,) and default.tls == "opportunistic"
    assert not default.gated or default.reactions


def test_the_default_rule_counts_each_domain_apart_a_provider_rule_all_together() -> None:
    shaping = parse_shaping(RULES, DELIVERY)
    assert shaping.rule_for("a.test").scope("A.test") == "default/a.test"
    assert shaping.rule_for("x.test", ["mx.google.com"]).scope("x.test") == "google"


def test_reactions_match_code_status_prefix_and_text() -> None:
    shaping = parse_shaping(RULES, DELIVERY)
    google = shaping.rule_for("gmail.com")
    move = google.reaction_to(421, "4.7.28", "unusual rate of unsolicited mail")
    assert move is not None and move.action == "move"
    slow = google.reaction_to(421, "4.7.0", "Too Many connections")
    assert slow is not None and slow.action == "slow" and str(slow.rate) == "10/min"
    assert google.reaction_to(450, "4.2.1", "too many") is None
    assert google.reaction_to(421, "4.7.0", "later") is None
    prefixed = parse_shaping(
        '[[rule]]\nname = "p"\ndomains = ["*"]\n[[rule.reactions]]\nstatus = "4.7."\n'
        'action = "suspend"\nduration = "5m"\n',
        DELIVERY,
    ).default
    assert prefixed.reaction_to(451, "4.7.650", "x") is not None
    assert prefixed.reaction_to(451, "4.4.1", "x") is None


def test_without_a_file_the_default_rule_is_todays_behaviour() -> None:
    shaping = load_shaping(None, DELIVERY)
    rule = shaping.rule_for("anything.test", ["mx.anything.test"])
    assert rule.retry == (Duration(900),) and not rule.gated and rule.tls == "opportunistic"
    assert shaping.source == "built-in"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (
            '[[rule]]\nname = "g"\ndomains = ["x"]\nmax_connections = 0\n',
            "rule 'g': max_connections: ",
        ),
        (
            '[[rule]]\nname = "g"\ndomains = ["x"]\nrate_per_ip = "5 per min"\n',
            "rule 'g': rate_per_ip.0: not a rate",
        ),
        ('[[rule]]\nname = "g"\ndomains = ["x"]\nretry = []\n', "rule 'g': retry: "),
        ('[[rule]]\nname = "g"\ndomains = ["x"]\nretry = ["0s"]\n', "rule 'g': retry: "),
        ('[[rule]]\nname = "g"\ndomains = ["x"]\ntls = "always"\n', "rule 'g': tls: "),
        ('[[rule]]\nname = "g"\ndomains = ["x"]\nspeed = 3\n', "rule 'g': speed: unknown key"),
        ('[[rule]]\nname = "g"\n', "rule 'g': a rule needs domains"),
        ('[[rule]]\ndomains = ["x"]\n', "rule #1: name: Field required"),
        (
            '[[rule]]\nname = "g"\ndomains = ["x"]\n[[rule.reactions]]\naction = "slow"\n'
            'duration = "1h"\ncode = 421\n',
            "rule 'g': reactions.0: action 'slow' needs a rate",
        ),
        (
            '[[rule]]\nname = "g"\ndomains = ["x"]\n[[rule.reactions]]\naction = "move"\n'
            'duration = "1h"\n',
            "rule 'g': reactions.0: a reaction needs code, status or text",
        ),
        (
            '[[rule]]\nname = "g"\ndomains = ["x"]\n[[rule.reactions]]\naction = "move"\n'
            'duration = "1h"\ntext = "(("\n',
            "rule 'g': reactions.0.text: not a regular expression",
        ),
        (
            '[[rule]]\nname = "g"\ndomains = ["x"]\n[[rule]]\nname = "h"\ndomains = ["x"]\n',
            "domain 'x' is in rules 'g' and 'h'",
        ),
        ("[[rule]\n", "invalid TOML"),
    ],
)
def test_errors_name_the_rule_and_the_key(text: str, error: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_shaping(text, DELIVERY, "shaping.toml")
    assert str(caught.value).startswith("shaping.toml: ")
    assert error in str(caught.value)


def test_a_missing_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^delivery.shaping: cannot read .*missing.toml"):
        load_shaping(tmp_path / "missing.toml", DELIVERY)


def test_the_starter_file_loads_and_covers_the_big_providers() -> None:
    shaping = load_shaping(STARTER, DELIVERY)
    names = {rule.name for rule in shaping.rules}
    assert {"google", "microsoft", "yahoo", "orange", "free", "sfr", "laposte"} <= names
    assert shaping.rule_for("gmail.com").tls == "required"
    assert shaping.rule_for("x.test", ["x-test.mail.protection.outlook.com"]).name == "microsoft"
    assert shaping.rule_for("wanadoo.fr").name == "orange"
    assert shaping.rule_for("free.fr").rates
    assert shaping.default.retry == (Duration(900),)
    # every provider's rule says where its numbers come from, in the comment above it
    lines = STARTER.read_text().splitlines()
    for name in ("google", "microsoft", "yahoo", "orange", "free", "sfr", "laposte"):
        start = lines.index(f'name = "{name}"') - 1
        assert lines[start] == "[[rule]]"
        comment = []
        for line in reversed(lines[:start]):
            if not line.startswith("#"):
                break
            comment.append(line)
        text = " ".join(comment)
        assert "http" in text or "GUESS" in text or "KumoMTA" in text, name


def test_the_retry_curve_repeats_its_last_step_until_the_max_age() -> None:
    schedule = RetrySchedule.parse(max_age="2h").with_curve(
        (Duration(300), Duration(600), Duration(1200))
    )
    created = 0.0
    assert schedule.next_attempt(0, created, attempt=1) == 300
    assert schedule.next_attempt(300, created, attempt=2) == 900
    assert schedule.next_attempt(900, created, attempt=3) == 2100
    assert schedule.next_attempt(2100, created, attempt=4) == 3300
    assert schedule.next_attempt(6600, created, attempt=9) == 7200  # capped by max age
    assert schedule.next_attempt(7200, created, attempt=10) is None
    assert "after 5m, 10m, 20m (the last repeated)" in str(schedule)
    plain = RetrySchedule.parse()
    assert plain.with_curve((Duration(900),)) is plain


async def test_a_reload_replaces_the_rules_whole_or_keeps_them(tmp_path: Path, redis) -> None:
    path = tmp_path / "shaping.toml"
    path.write_text('[[rule]]\nname = "a"\ndomains = ["a.test"]\nmax_connections = 2\n')
    source = ShapingSource(DeliverySettings(shaping=path), redis)
    assert source.current.rule_for("a.test").max_connections == 2
    path.write_text('[[rule]]\nname = "a"\ndomains = ["a.test"]\nmax_connections = 0\n')
    assert source.reload() is False  # refused: the rules in force stay
    assert source.current.rule_for("a.test").max_connections == 2
    path.write_text('[[rule]]\nname = "a"\ndomains = ["a.test"]\nmax_connections = 5\n')
    await source.check()  # nothing asked yet: no reload
    assert source.current.rule_for("a.test").max_connections == 2
    await request_reload(redis)  # what `relay reload` does, for every process
    await source.check()
    assert source.current.rule_for("a.test").max_connections == 5


def test_a_relay_does_not_start_with_rules_that_do_not_validate(tmp_path: Path) -> None:
    path = tmp_path / "shaping.toml"
    path.write_text('[[rule]]\nname = "a"\ndomains = ["a.test"]\ntls = "maybe"\n')
    with pytest.raises(ConfigError, match="rule 'a': tls: "):
        ShapingSource(DeliverySettings(shaping=path))
