"""DATA on the wire: the same bytes as aiosmtplib would send, without its regexes."""

from __future__ import annotations

import aiosmtplib
from aiosmtplib.protocol import PERIOD_REGEX, SMTPProtocol, normalize_message_line_endings
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.delivery.wire import wire_form


def aiosmtplibs(message: bytes) -> bytes:
    return PERIOD_REGEX.sub(b"..", normalize_message_line_endings(message))


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from([b"a", b".", b"\r", b"\n", b"\r\n", b"..", b" "])).map(b"".join))
def test_wire_form_is_aiosmtplibs(message: bytes) -> None:
    assert wire_form(message) == aiosmtplibs(message)


async def test_the_aiosmtplib_internals_send_data_uses_are_there() -> None:
    """relay/delivery/wire.py does what SMTPProtocol.execute_data_command does after its
    354; if aiosmtplib renames these, pin the version it was written for or port it."""
    protocol = SMTPProtocol()
    assert hasattr(protocol, "_command_lock") and hasattr(protocol, "_response_pending"), (
        f"aiosmtplib {aiosmtplib.__version__} changed the internals send_data relies on"
    )
    assert callable(protocol.write) and callable(protocol.read_response)
