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


def test_paths_that_crash_the_email_parser_are_malformed():
    for arg in ['"', ' "', '<"', "<"]:
        assert parse_path(arg, 0) == (None, None)
