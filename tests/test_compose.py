"""The send API's JSON → RFC 5322 message: pure, read back with the standard parser."""

from __future__ import annotations

import base64
import email
import email.policy
import email.utils
import string

import hypothesis.strategies as st
import pytest
from hypothesis import given

from relay.address import is_mailbox
from relay.submission import compose as composing
from relay.submission.compose import FieldError, compose
from tests.support.stdlib_mime import same_but_boundaries, stdlib_content


def parsed(content: bytes) -> email.message.EmailMessage:
    message = email.message_from_bytes(content, policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return message


def test_text_html_and_attachments_read_back():
    pdf = b"%PDF-1.4 \x00\xff"
    composed = compose(
        {
            "from": "Zoë Shop <orders@shop.example>",
            "to": ["bob@example.com", "Çé <c@example.org>"],
            "cc": "d@example.net",
            "bcc": ["hidden@example.com"],
            "subject": "Votre commande n° 42",
            "text": "Merci, voilà.\nLigne 2",
            "html": "<p>Merci</p>",
            "attachments": [
                {
                    "name": "façture.pdf",
                    "content_type": "application/pdf",
                    "content": base64.b64encode(pdf).decode(),
                }
            ],
            "headers": {"X-Order": "42"},
        }
    )
    assert composed.mail_from == "orders@shop.example"
    assert composed.recipients == (
        ("to", "bob@example.com"),
        ("to", "c@example.org"),
        ("cc", "d@example.net"),
        ("bcc", "hidden@example.com"),
    )
    assert b"\r\n" in composed.content and b"\n" not in composed.content.replace(b"\r\n", b"")
    assert b"hidden@example.com" not in composed.content
    message = parsed(composed.content)
    assert message["From"] == "Zoë Shop <orders@shop.example>"
    assert message["Subject"] == "Votre commande n° 42" and message["X-Order"] == "42"
    text = message.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert text == "Merci, voilà.\nLigne 2"
    assert message.get_body(("html",)).get_content().strip() == "<p>Merci</p>"
    [attachment] = list(message.iter_attachments())
    assert attachment.get_filename() == "façture.pdf"
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_content() == pdf


def test_raw_message_takes_its_envelope_from_the_headers_and_loses_bcc():
    raw = b"From: a@b.example\nTo: c@d.example, e@f.example\nBcc: g@h.example\n\nhi\n"
    composed = compose({"raw": base64.b64encode(raw).decode()})
    assert composed.mail_from == "a@b.example"
    assert [a for _, a in composed.recipients] == ["c@d.example", "e@f.example", "g@h.example"]
    assert composed.content == b"From: a@b.example\r\nTo: c@d.example, e@f.example\r\n\r\nhi\r\n"


@pytest.mark.parametrize(
    ("request_body", "field"),
    [
        ([], "body"),
        ({"to": "a@b.example", "text": "x"}, "from"),
        ({"from": "a@b.example", "text": "x"}, "to"),
        ({"from": "a@b.example", "to": "c@d.example"}, "text"),
        ({"from": "a@b.example", "to": ["c@d.example", "two@x.example, three@x.example"]}, "to[1]"),
        ({"from": "a@b.example\r\nBcc: x@y.example", "to": "c@d.example", "text": "x"}, "from"),
        ({"from": "a@b.example", "to": "c@d.example", "text": "x", "subject": "a\nb"}, "subject"),
        # what str.splitlines breaks at: the stdlib's folding made a line of each (a header,
        # or an error answered 500)
        (
            {"from": "a@b.example", "to": "c@d.example", "text": "x", "subject": "a\x0bBcc: e@f.g"},
            "subject",
        ),
        ({"from": "a@b.example", "to": "c@d.example", "text": "x", "subject": "a\x1cb"}, "subject"),
        (
            {"from": "a@b.example", "to": "c@d.example", "text": "x", "subject": "é\u2028b"},
            "subject",
        ),
        (
            {"from": "a@b.example", "to": "c@d.example", "text": "x", "headers": {"X-A": "1\x0c2"}},
            "headers.X-A",
        ),
        (
            {"from": "a@b.example", "to": "c@d.example", "text": "x", "headers": {"Bcc": "x"}},
            "headers.Bcc",
        ),
        (
            {"from": "a@b.example", "to": "c@d.example", "text": "x", "headers": {"X-A": "1\r\n"}},
            "headers.X-A",
        ),
        (
            {
                "from": "a@b.example",
                "to": "c@d.example",
                "text": "x",
                "attachments": [{"name": "a", "content": "aGk=", "content_type": "pdf"}],
            },
            "attachments[0].content_type",
        ),
        ({"raw": "not base64!"}, "raw"),
        # JSON can carry a lone surrogate, which no encoding writes (was a 500)
        ({"from": "a@b.example", "to": "c@d.example", "text": "x", "subject": "\ud800"}, "body"),
        ({"from": "a@b.example", "to": "c@d.example", "text": "é\udfff"}, "body"),
    ],
)
def test_bad_input_names_the_field(request_body, field):
    with pytest.raises(FieldError) as caught:
        compose(request_body)
    assert caught.value.field == field


_STDLIB_WIRE = email.policy.compat32.clone(linesep="\r\n")


@given(
    st.sampled_from(["Subject", "To", "From", "X-Order", "Content-Type", "X-" + "y" * 60]),
    st.text(st.sampled_from(string.printable + "\x01\x7f\u00e9"), max_size=100),
)
def test_header_lines_are_the_bytes_the_standard_library_folds(name, value):
    """Composing writes a short printable ASCII header line as it is instead of folding it:
    the same bytes as the standard library's folding, for any line."""
    try:
        expected: bytes | type[Exception] = _STDLIB_WIRE.fold_binary(name, value)
    except email.errors.HeaderParseError:
        expected = email.errors.HeaderParseError
    try:
        found: bytes | type[Exception] = composing._WIRE.fold_binary(name, value)
    except email.errors.HeaderParseError:
        found = email.errors.HeaderParseError
    assert found == expected


def _parsed_mailbox(shown: str) -> tuple[str, str] | None:
    """An address field as `parseaddr` reads it (what composing did for every address)."""
    name, address = email.utils.parseaddr(shown)
    if not address or not is_mailbox(address) or (not name and shown.strip("<>") != address):
        return None
    return shown, address


@given(
    st.from_regex(r"[a-zA-Z0-9.!'+_=-]{1,8}@[a-z0-9.-]{1,8}", fullmatch=True)
    | st.text(st.sampled_from("ab9.-_+!'\"@<> ()[]\\,;:é"), min_size=1, max_size=20)
)
def test_a_bare_address_is_read_as_parseaddr_reads_it(entry):
    try:
        found: tuple[str, str] | None = composing._mailbox("to", entry)
    except FieldError:
        found = None
    assert found == _parsed_mailbox(entry.strip())


def _pieces(*pieces: str, size: int = 12) -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(pieces), max_size=size).map("".join)


_TEXT = _pieces("a", "b", " ", "\t", "=", ".", "\n", "\r\n", "\x01", "é", "€", "😀", "x" * 80)
_NAME = _pieces("a", "b", ".", '"', "\\", " ", "é", ";", "n" * 40)


@given(
    subject=_pieces("a", "b", " ", ",", ";", "é", "=?", "word " * 20),
    text=_TEXT | st.just("y" * 1200),
    html=_TEXT,
    attachments=st.lists(
        st.tuples(_NAME, st.binary(max_size=120), st.sampled_from(["application/pdf", "a/b"])),
        max_size=2,
    ),
    extra=st.dictionaries(
        st.sampled_from(["X-A", "X-Order"]), _pieces("a", " ", "é", ";", "long " * 20)
    ),
)
def test_the_message_is_the_one_the_standard_library_writes(
    subject, text, html, attachments, extra
):
    """compose writes the MIME entities itself: the same bytes as the standard library's
    email.mime classes and generator (compat32, CRLF), but for the random boundaries."""
    data = {
        "from": "Zoë <a@b.example>",
        "to": ["c@d.example", "Ça <e@f.example>"],
        "cc": "g@h.example",
        "subject": subject,
        "text": text or "t",
        "html": html,
        "headers": extra,
        "attachments": [
            {"name": n, "content": base64.b64encode(raw).decode(), "content_type": t}
            for n, raw, t in attachments
        ],
    }
    assert same_but_boundaries(compose(data).content) == same_but_boundaries(stdlib_content(data))
