import pytest

from quota import Duration
from quota.errors import InvalidValue
from relay.config import parse_size


@pytest.mark.parametrize(
    "text,seconds,canonical",
    [
        ("15m", 900, "15m"),
        ("7d", 604800, "7d"),
        ("1h30m", 5400, "1h30m"),
        ("250ms", 0.25, "250ms"),
        ("90", 90, "1m30s"),
        ("0s", 0, "0s"),
        (" 2H ", 7200, "2h"),
        ("1.5s", 1.5, "1s500ms"),
    ],
)
def test_duration_parses_and_round_trips(text, seconds, canonical):
    duration = Duration.parse(text)
    assert duration.seconds == seconds and str(duration) == canonical
    assert Duration.parse(str(duration)) == duration


@pytest.mark.parametrize("bad", ["", "soon", "15 minutes", "m15", "1h-5m", "-5s", True])
def test_bad_durations_are_refused_naming_the_value(bad):
    with pytest.raises(InvalidValue):
        Duration.parse(bad)


def test_numbers_and_durations_pass_through():
    assert Duration.parse(30) == Duration(30.0)
    assert Duration.parse(Duration(5)) == Duration(5)
    with pytest.raises(InvalidValue):
        Duration(-1)


@pytest.mark.parametrize(
    "text,size",
    [
        ("50MB", 50_000_000),
        ("512KiB", 524_288),
        ("1000", 1000),
        (1000, 1000),
        ("2 GB", 2_000_000_000),
        ("10b", 10),
    ],
)
def test_sizes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["50XB", "", "-1", "0", 0, "1.5MB"])
def test_bad_sizes(bad):
    with pytest.raises(ValueError):
        parse_size(bad)
