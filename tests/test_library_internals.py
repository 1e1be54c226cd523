"""The private parts of aiosmtpd and aiosmtplib that the relay relies on are still there, with
the signatures it was written against.

pyproject.toml pins both to the minor version tested; this is what to read when raising a pin.
Where aiosmtpd has a public hook the relay uses it (handle_MAIL, handle_RCPT, handle_AUTH,
handle_exception...). These have none:
- `_getaddr`: aiosmtpd's address parser accepts what RFC 5321 does not (relay/submission/server.py);
- `_set_post_data_state`: the one place every transaction ends (RSET, EHLO, HELO, DATA), where
  the quota reservations of a transaction that did not end in a 250 are given back;
- `_timeout_cb`: the idle timeout, answered with a 421 before the connection closes;
- `smtp_DATA`: DATA streamed to the spool (aiosmtpd's handle_DATA gets the message whole);
- `smtp_STARTTLS`: the handshake bounded by `submission.timeouts.tls_handshake`;
- `_reader`, `_tls_protocol`, `_original_transport`, `_reset_timeout`, `_create_envelope`:
  what those overrides read or call;
- aiosmtplib's `SMTPProtocol._command_lock`/`_response_pending`: relay/delivery/wire.py sends a
  message already in wire form (tests/test_wire.py checks the bytes).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import aiosmtpd
import aiosmtpd.smtp
import aiosmtplib
import pytest
from aiosmtplib.protocol import SMTPProtocol

SMTP = aiosmtpd.smtp.SMTP

# (name, parameters after self, coroutine?) as in aiosmtpd 1.4.
AIOSMTPD_METHODS = [
    ("_getaddr", ["arg"], False),
    ("_set_post_data_state", [], False),
    ("_timeout_cb", [], False),
    ("_reset_timeout", ["duration"], False),
    ("_create_envelope", [], False),
    ("smtp_DATA", ["arg"], True),
    ("smtp_STARTTLS", ["arg"], True),
    ("smtp_MAIL", ["arg"], True),
    ("smtp_RCPT", ["arg"], True),
    ("smtp_EHLO", ["hostname"], True),
    ("smtp_HELO", ["hostname"], True),
    ("check_helo_needed", ["helo"], True),
    ("check_auth_needed", ["caller_method"], True),
]
AIOSMTPD_ATTRIBUTES = ["_reader", "_tls_protocol", "_original_transport"]


def _changed(library: str, version: str, what: str, how: str) -> str:
    return (
        f"{library} {version} changed {what}: {how}. The relay overrides or reads it (see the "
        f"docstring of tests/test_library_internals.py): port the override, then raise the pin "
        f"in pyproject.toml."
    )


@pytest.mark.parametrize(("name", "parameters", "is_async"), AIOSMTPD_METHODS)
def test_aiosmtpd_methods_the_relay_overrides_or_calls(
    name: str, parameters: list[str], is_async: bool
) -> None:
    version = aiosmtpd.__version__
    method: Callable[..., object] | None = getattr(SMTP, name, None)
    assert method is not None, _changed("aiosmtpd", version, f"SMTP.{name}", "it is gone")
    found = list(inspect.signature(method).parameters)[1:]
    assert found == parameters, _changed(
        "aiosmtpd", version, f"SMTP.{name}", f"parameters {found}, written for {parameters}"
    )
    assert inspect.iscoroutinefunction(method) == is_async, _changed(
        "aiosmtpd", version, f"SMTP.{name}", "async became sync or the reverse"
    )


@pytest.mark.parametrize("attribute", AIOSMTPD_ATTRIBUTES)
def test_aiosmtpd_attributes_the_relay_reads(attribute: str) -> None:
    source = inspect.getsource(SMTP)
    assert f"self.{attribute} =" in source or f"self.{attribute}:" in source, _changed(
        "aiosmtpd", aiosmtpd.__version__, f"SMTP.{attribute}", "SMTP no longer sets it"
    )


async def test_aiosmtplib_protocol_internals_wire_uses() -> None:
    """Async: the protocol takes the running loop (a sync test would find none after
    tests that closed theirs)."""
    version = aiosmtplib.__version__
    protocol = SMTPProtocol()
    for attribute in ("_command_lock", "_response_pending"):
        assert hasattr(protocol, attribute), _changed(
            "aiosmtplib", version, f"SMTPProtocol.{attribute}", "it is gone"
        )
    found = list(inspect.signature(SMTPProtocol.read_response).parameters)[1:]
    assert found == ["timeout"], _changed(
        "aiosmtplib", version, "SMTPProtocol.read_response", f"parameters {found}"
    )


def test_the_message_names_the_change_and_the_way_out() -> None:
    message = _changed("aiosmtpd", "9.9", "SMTP._getaddr", "it is gone")
    assert "aiosmtpd 9.9 changed SMTP._getaddr: it is gone" in message
    assert "raise the pin" in message
