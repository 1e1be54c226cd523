"""DATA on the wire: the same bytes as aiosmtplib would send, without its regexes."""

from __future__ import annotations

from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.delivery.wire import wire_form


def aiosmtplibs(message: bytes) -> bytes:
    return PERIOD_REGEX.sub(b"..", normalize_message_line_endings(message))


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from([b"a", b".", b"\r", b"\n", b"\r\n", b"..", b" "])).map(b"".join))
def test_wire_form_is_aiosmtplibs(message: bytes) -> None:
    assert wire_form(message) == aiosmtplibs(message)
