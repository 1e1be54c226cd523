"""Our MAIL/RCPT path parser answers exactly as aiosmtpd's, which it replaces for speed."""

from types import SimpleNamespace

from aiosmtpd.smtp import SMTP
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.submission.server import parse_path

PIECES = ["<", ">", "@", "a", "b.c", '"q u"', " ", "SIZE=10", ":", ",", "\\", "é", "<>"]


def theirs(arg: str, limit: int):
    return SMTP._getaddr(SimpleNamespace(local_part_limit=limit), arg)  # type: ignore[arg-type]


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.sampled_from(PIECES), max_size=12).map("".join) | st.text(max_size=40),
    st.sampled_from([0, 3, 64]),
)
def test_same_answers_as_aiosmtpd(arg, limit):
    try:
        expected = theirs(arg, limit)
    except IndexError:  # aiosmtpd crashes on a few paths ("<", '"'); we call them malformed
        expected = (None, None)
    assert parse_path(arg, limit) == expected


LOCAL = st.text(alphabet="ab1.-+_=!#{|}~'é\"()", min_size=1, max_size=12)
DOMAIN = st.text(alphabet="ab1.-_[]", min_size=1, max_size=12)
AFTER = st.sampled_from(
    [
        "",
        " ",
        "  ",
        "\t",
        " \x0b",
        " SIZE=10",
        "\tSIZE=10 BODY=8BITMIME",
        "x",
        " (c) SIZE=1",
        "(c)",
        " \u00a0x",
        ">",
        " <a@b>",
    ]
)


@settings(max_examples=1500, deadline=None)
@given(LOCAL, DOMAIN, AFTER, st.sampled_from([0, 3, 64]))
def test_the_usual_paths_get_the_same_answers_as_aiosmtpd(local, domain, after, limit):
    """`<local@domain>` and parameters: the forms read without the email parser."""
    arg = f"<{local}@{domain}>{after}"
    try:
        expected = theirs(arg, limit)
    except (IndexError, AttributeError):  # aiosmtpd crashes ('<a@[>'); we call them malformed
        expected = (None, None)
    assert parse_path(arg, limit) == expected


def test_paths_that_crash_the_email_parser_are_malformed():
    for arg in ['"', ' "', '<"', "<", "<a@[>"]:
        assert parse_path(arg, 0) == (None, None)
