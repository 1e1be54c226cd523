"""Outcome classification: pure functions over replies and exceptions, no servers."""

from __future__ import annotations

import re
import ssl

import aiosmtplib
import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.delivery.errors import PermanentRouteError, TransientRouteError
from relay.delivery.outcome import (
    LOCAL_TRANSIENT_CODE,
    Disposition,
    RecipientOutcome,
    classify_exception,
    classify_reply,
    is_block_like,
    split_status,
)

D, T, P = Disposition.DELIVERED, Disposition.TRANSIENT, Disposition.PERMANENT
WELL_FORMED = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (200, D), (220, D), (250, D), (251, D), (299, D),
        (354, T), (421, T), (450, T), (451, T), (452, T), (499, T),
        (500, P), (550, P), (552, P), (554, P), (556, P), (599, P),
        (0, T), (-1, T), (100, T), (199, T), (600, T), (999, T),
    ],
)  # fmt: skip
def test_reply_class_decides(code: int, expected: Disposition) -> None:
    assert classify_reply(code, "whatever") is expected


@given(st.integers(min_value=-1000, max_value=1000), st.text(max_size=40))
def test_every_reply_gets_a_disposition_and_a_well_formed_status(code: int, text: str) -> None:
    disposition = classify_reply(code, text)
    status, _ = split_status(code, text)
    assert WELL_FORMED.fullmatch(status)
    assert status[0] == {D: "2", T: "4", P: "5"}[disposition]


@pytest.mark.parametrize(
    ("code", "message", "status", "text"),
    [
        (250, "2.1.5 OK", "2.1.5", "OK"),
        (451, "4.7.1 try later", "4.7.1", "try later"),
        (550, "5.1.1 no such user", "5.1.1", "no such user"),
        (556, "5.1.10 null MX", "5.1.10", "null MX"),
        (550, "no such user", "5.0.0", "no such user"),
        (451, "try later", "4.0.0", "try later"),
        (250, "OK", "2.0.0", "OK"),
        (550, "4.7.1 class differs from the code", "5.0.0", "4.7.1 class differs from the code"),
        (550, "5.7.1", "5.7.1", ""),
        (550, "5.1.1x not a status", "5.0.0", "5.1.1x not a status"),
        (554, "5.7.1 first line\n5.7.1 second line", "5.7.1", "first line second line"),
        (451, "4.3.0 one\n4.3.1 other status stays", "4.3.0", "one 4.3.1 other status stays"),
        (421, "  4.4.2   padded  ", "4.4.2", "padded"),
        (354, "End data with <CR><LF>.<CR><LF>", "4.0.0", "End data with <CR><LF>.<CR><LF>"),
        (-1, "garbage", "4.0.0", "garbage"),
    ],
)
def test_enhanced_status_comes_from_the_reply_or_the_class(
    code: int, message: str, status: str, text: str
) -> None:
    assert split_status(code, message) == (status, text)


EXCEPTIONS = [
    # Replies: the code decides.
    (aiosmtplib.SMTPResponseException(421, "4.7.0 too many connections"), T, 421, "4.7.0"),
    (aiosmtplib.SMTPResponseException(550, "5.7.1 relaying denied"), P, 550, "5.7.1"),
    (aiosmtplib.SMTPConnectResponseError(554, "5.7.1 blocked"), P, 554, "5.7.1"),
    (aiosmtplib.SMTPConnectResponseError(421, "busy"), T, 421, "4.0.0"),
    (aiosmtplib.SMTPSenderRefused(553, "5.1.8 bad sender domain", "a@x"), P, 553, "5.1.8"),
    (aiosmtplib.SMTPRecipientRefused(452, "4.2.2 mailbox full", "b@x"), T, 452, "4.2.2"),
    (aiosmtplib.SMTPRecipientRefused(550, "5.1.1 unknown", "b@x"), P, 550, "5.1.1"),
    (aiosmtplib.SMTPDataError(554, "5.6.0 message rejected"), P, 554, "5.6.0"),
    (aiosmtplib.SMTPDataError(451, "4.3.0 local error"), T, 451, "4.3.0"),
    (aiosmtplib.SMTPHeloError(501, "5.5.4 bad helo"), P, 501, "5.5.4"),
    (aiosmtplib.SMTPResponseException(250, "2.0.0 odd"), T, LOCAL_TRANSIENT_CODE, "4.0.0"),
    (aiosmtplib.SMTPResponseException(354, "go ahead"), T, 354, "4.0.0"),
    # No reply: transient, with a status that says why.
    (aiosmtplib.SMTPConnectError("Error connecting: refused"), T, LOCAL_TRANSIENT_CODE, "4.4.1"),
    (aiosmtplib.SMTPConnectTimeoutError("Timed out connecting"), T, LOCAL_TRANSIENT_CODE, "4.4.1"),
    (aiosmtplib.SMTPReadTimeoutError("Timed out waiting"), T, LOCAL_TRANSIENT_CODE, "4.4.2"),
    (aiosmtplib.SMTPTimeoutError("Timed out"), T, LOCAL_TRANSIENT_CODE, "4.4.2"),
    (TimeoutError("deadline"), T, LOCAL_TRANSIENT_CODE, "4.4.2"),
    (aiosmtplib.SMTPServerDisconnected("Connection lost"), T, LOCAL_TRANSIENT_CODE, "4.4.2"),
    (ConnectionResetError(104, "reset by peer"), T, LOCAL_TRANSIENT_CODE, "4.4.2"),
    (ConnectionRefusedError(111, "Connection refused"), T, LOCAL_TRANSIENT_CODE, "4.4.1"),
    (OSError(99, "Cannot assign requested address"), T, LOCAL_TRANSIENT_CODE, "4.4.0"),
    (ssl.SSLError(1, "[SSL] handshake failure"), T, LOCAL_TRANSIENT_CODE, "4.7.5"),
    (
        ssl.SSLCertVerificationError(1, "certificate verify failed"),
        T,
        LOCAL_TRANSIENT_CODE,
        "4.7.5",
    ),
    (aiosmtplib.SMTPNotSupported("SMTPUTF8 not supported"), T, LOCAL_TRANSIENT_CODE, "4.0.0"),
    (aiosmtplib.SMTPException("odd"), T, LOCAL_TRANSIENT_CODE, "4.0.0"),
    (RuntimeError("bug"), T, LOCAL_TRANSIENT_CODE, "4.0.0"),
    # Routing: the error carries its code and status.
    (PermanentRouteError("nowhere.test: domain does not exist", status="5.1.2"), P, 550, "5.1.2"),
    (PermanentRouteError("null MX", status="5.1.10", code=556), P, 556, "5.1.10"),
    (TransientRouteError("SERVFAIL", status="4.4.3"), T, 451, "4.4.3"),
]


@pytest.mark.parametrize(("exc", "disposition", "code", "status"), EXCEPTIONS)
def test_exceptions_are_transient_unless_a_5xx_reply_or_a_dead_route(
    exc: BaseException, disposition: Disposition, code: int, status: str
) -> None:
    got_disposition, got_code, got_status, text = classify_exception(exc)
    assert (got_disposition, got_code, got_status) == (disposition, code, status)
    assert text  # always something to show in a log or a bounce


def test_exception_text_is_the_reply_text_or_the_error() -> None:
    assert (
        classify_exception(aiosmtplib.SMTPRecipientRefused(550, "5.1.1 unknown user", "b@x"))[3]
        == "unknown user"
    )
    assert "refused" in classify_exception(ConnectionRefusedError())[3]
    assert "TimeoutError" in classify_exception(TimeoutError())[3]
    assert "TLS" in classify_exception(ssl.SSLError(1, "handshake failure"))[3]


def test_all_recipients_refused_is_transient_if_any_refusal_is() -> None:
    mixed = aiosmtplib.SMTPRecipientsRefused(
        [
            aiosmtplib.SMTPRecipientRefused(550, "5.1.1 unknown", "a@x"),
            aiosmtplib.SMTPRecipientRefused(451, "4.7.1 later", "b@x"),
        ]
    )
    assert classify_exception(mixed)[:3] == (T, 451, "4.7.1")
    permanent = aiosmtplib.SMTPRecipientsRefused(
        [aiosmtplib.SMTPRecipientRefused(550, "5.1.1 unknown", "a@x")]
    )
    assert classify_exception(permanent)[:3] == (P, 550, "5.1.1")
    assert classify_exception(aiosmtplib.SMTPRecipientsRefused([]))[0] is T


@pytest.mark.parametrize(
    ("code", "message", "expected"),
    [
        (421, "4.7.0 too many connections from your IP", True),
        (421, "4.4.2 timeout", True),
        (450, "4.7.1 Client host rejected: cannot find your hostname", True),
        (451, "4.7.650 The mail server is experiencing reputation issues", True),
        (
            554,
            "5.7.1 Service unavailable; Client host [1.2.3.4] blocked using zen.spamhaus.org",
            True,
        ),
        (554, "Your IP is listed at bl.example", True),
        (554, "5.7.1 Message rejected as spam", True),
        (554, "on our BLACKLIST", True),
        (554, "5.7.0 poor sender reputation", True),
        (550, "5.7.1 Client [1.2.3.4] blocked by policy", True),
        (554, "5.6.0 message content rejected", False),
        (554, "Transaction failed", False),
        (550, "5.1.1 user unknown", False),
        (550, "5.7.1 Relaying denied", False),
        (550, "spam", False),  # neither 554 nor a 5.7.x status: not about our IP
        (451, "4.3.0 local error", False),
        (452, "4.2.2 mailbox full", False),
        (250, "2.0.0 blocked? no, delivered", False),
        (554, "4.7.1 class mismatch, no words", False),
    ],
)
def test_block_like_replies(code: int, message: str, expected: bool) -> None:
    assert is_block_like(code, message) is expected


def test_outcome_is_a_frozen_value() -> None:
    outcome = RecipientOutcome("a@x", D, 250, "2.0.0", "OK", "mx.x", "127.0.0.2", True)
    assert outcome == RecipientOutcome("a@x", D, 250, "2.0.0", "OK", "mx.x", "127.0.0.2", True)
    with pytest.raises(AttributeError):
        outcome.code = 550  # type: ignore[misc]
