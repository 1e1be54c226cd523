import re

import pytest

from quota import Decision, Verdict
from relay import replies
from relay.submission.policy import format_wait, refusal

ALL = {name: value for name, value in vars(replies).items() if isinstance(value, replies.Reply)}


@pytest.mark.parametrize("name", sorted(ALL))
def test_every_reply_is_well_formed(name):
    reply = ALL[name]
    assert 200 <= reply.code < 600
    assert re.fullmatch(r"[245]\.\d{1,3}\.\d{1,3}", reply.status)
    assert reply.status[0] == str(reply.code)[0], "the enhanced code's class matches the reply"
    assert reply.text and "\n" not in reply.text and "\r" not in reply.text


@pytest.mark.parametrize(
    "line,expected",
    [
        (
            "530 Must issue a STARTTLS command first",
            "530 5.7.0 Must issue a STARTTLS command first",
        ),
        ("552 Error: Too much mail data", str(replies.MESSAGE_TOO_BIG)),
        ("500 Error: bad syntax", "500 5.5.2 bad syntax"),
        ("503 Error: need RCPT command", "503 5.5.1 need RCPT command"),
        ("250 OK", "250 2.0.0 OK"),
        (
            "535 5.7.8 Authentication credentials invalid",
            "535 5.7.8 Authentication credentials invalid",
        ),
        (
            "502 5.5.1 Too many unrecognized commands, goodbye.",
            "502 5.5.1 Too many unrecognized commands, goodbye.",
        ),
        ("250-SIZE 1000", "250-2.0.0 SIZE 1000"),
    ],
)
def test_enhance_gives_aiosmtpd_replies_a_status(line, expected):
    assert replies.enhance(line) == expected


@pytest.mark.parametrize(
    "seconds,text",
    [
        (0.2, "1s"),
        (12, "12s"),
        (59.01, "1m00s"),
        (61, "1m01s"),
        (7980, "2h13m"),
        (7981, "2h14m"),
        (86430, "24h01m"),
    ],
)
def test_waits_are_rounded_up(seconds, text):
    assert format_wait(seconds) == text


NOW = 1_800_000_000.0  # 2027-01-15 08:00:00Z


def test_refusal_texts_say_why_and_when():
    assert refusal(Decision(Verdict.ALLOWED, limit=5, used=1), "a@b.c", NOW) is None
    text = refusal(Decision(Verdict.OVER_QUOTA, limit=1000, retry_at=NOW + 7980), "a@b.c", NOW)
    assert text == "452 4.7.1 Daily quota 1000 reached; next free slot at 10:13:00Z (in 2h13m)"
    text = refusal(Decision(Verdict.OVER_RATE, limit=100, retry_at=NOW + 12), "a@b.c", NOW)
    assert text.startswith("451 4.7.1 Rate limit of 100 recipients per minute")
    assert text.endswith("retry at 08:00:12Z (in 12s)")
    text = refusal(
        Decision(Verdict.OVER_RECIPIENT_RATE, limit=100, retry_at=NOW + 60), "bob@x.com", NOW
    )
    assert "100 messages per minute to bob@x.com" in text and text.startswith("451 4.7.1")
    assert refusal(Decision(Verdict.EXPIRED), "a@b.c", NOW).startswith("550 5.7.1 Account")
    text = refusal(Decision(Verdict.SUSPENDED, reason="reputation"), "a@b.c", NOW)
    assert text.startswith("451 4.7.1 Account suspended (reputation)")
    text = refusal(Decision(Verdict.SUSPENDED, reason="abuse", permanent=True), "a@b.c", NOW)
    assert text.startswith("550 5.7.1 Account suspended (abuse)")
    text = refusal(Decision(Verdict.OVER_QUOTA, limit=5, retry_at=None), "a@b.c", NOW)
    assert "contact support" in text
