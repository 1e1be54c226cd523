"""The streamed DATA decoder against aiosmtpd's line-by-line rules, and the streamed DKIM body
hash against the whole-body one, for any content cut into any pieces a reader can return."""

from __future__ import annotations

import base64
import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from relay.submission.data_stream import SEARCH, DataDecoder, DataState
from reputation.dkim import RelaxedBodyHash, _relaxed_body, _split

LINE_LIMIT = 40


def reference(stream: bytes, *, size_limit: int, line_limit: int) -> tuple[bytes, DataState, int]:
    """aiosmtpd 1.4's smtp_DATA loop, as data: lines end at CRLF; the "." line ends DATA."""
    content: list[bytes] = []
    state = DataState.NOMINAL
    size = 0
    rest = stream
    while True:
        cut = rest.index(b"\r\n") + 2
        line, rest = rest[:cut], rest[cut:]
        if line == b".\r\n":
            break
        size += len(line)
        if len(line) > line_limit and state is DataState.NOMINAL:
            state = DataState.TOO_LONG
        if state is DataState.NOMINAL and size_limit and size > size_limit:
            state = DataState.TOO_MUCH
        content.append(line[1:] if line.startswith(b".") else line)
    return (b"".join(content) if state is DataState.NOMINAL else b""), state, len(rest)


def reader_pieces(stream: bytes, cuts: list[int]) -> list[bytes]:
    """What `readuntil(SEARCH)` / `read(consumed)` hand over: every ".\\r\\n" ends a piece
    (the reader stops there), other cuts fall anywhere but inside one."""
    ends = set()
    at = stream.find(SEARCH)
    while at >= 0:
        ends.add(at + 3)
        at = stream.find(SEARCH, at + 1)
    inside = {e - 1 for e in ends} | {e - 2 for e in ends}
    points = sorted(ends | {c for c in cuts if 0 < c < len(stream) and c not in inside})
    pieces, start = [], 0
    for point in points:
        pieces.append(stream[start:point])
        start = point
    if start < len(stream):
        pieces.append(stream[start:])
    return [p for p in pieces if p]


def decode(pieces: list[bytes], **limits: int) -> tuple[bytes, DataState, int]:
    decoder = DataDecoder(**limits)
    out = b""
    for n, piece in enumerate(pieces):
        out += decoder.feed(piece)
        if decoder.done:  # a refused message is dropped whole: what came before does not count
            content = out if decoder.state is DataState.NOMINAL else b""
            return content, decoder.state, sum(len(p) for p in pieces[n + 1 :])
    raise AssertionError("the end of DATA was not found")


line = st.lists(
    st.sampled_from([b"a", b".", b" ", b"\t", b"\n", b"\r", b"x" * 30, b"\r\n."]), max_size=6
).map(b"".join)


@settings(max_examples=400, deadline=None)
@given(
    lines=st.lists(line, max_size=12),
    after=st.sampled_from([b"", b"QUIT\r\n", b"MAIL FROM:<a@b>\r\n"]),
    cuts=st.lists(st.integers(0, 400), max_size=8),
    size_limit=st.sampled_from([0, 30, 200]),
)
def test_decoder_matches_aiosmtpd_for_any_pieces(lines, after, cuts, size_limit) -> None:
    stream = b"".join(x + b"\r\n" for x in lines) + b".\r\n" + after
    want = reference(stream, size_limit=size_limit, line_limit=LINE_LIMIT)
    got = decode(reader_pieces(stream, cuts), size_limit=size_limit, line_limit=LINE_LIMIT)
    assert got == want


def test_the_end_line_alone_is_an_empty_message() -> None:
    decoder = DataDecoder(size_limit=0, line_limit=1000)
    assert decoder.feed(b".\r\n") == b"" and decoder.done and decoder.size == 0


def test_a_dot_line_split_from_its_crlf_is_not_the_end() -> None:
    decoder = DataDecoder(size_limit=0, line_limit=1000)
    assert decoder.feed(b"a\r\n..\r\n") == b"a\r\n.\r\n" and not decoder.done
    assert decoder.feed(b"b.\r\n") == b"b.\r\n" and not decoder.done
    assert decoder.feed(b".\r\n") == b"" and decoder.done


@settings(max_examples=300, deadline=None)
@given(
    body=st.lists(
        st.sampled_from([b"a", b" ", b"\t", b"\r\n", b"\n", b"\r", b"  x", b"\r\n\r\n"]),
        max_size=40,
    ).map(b"".join),
    cuts=st.lists(st.integers(1, 7), max_size=40),
)
def test_streamed_body_hash_equals_the_whole_body_hash(body: bytes, cuts: list[int]) -> None:
    whole = _split(b"From: a@b\r\n\r\n" + body)[1]
    want = base64.b64encode(hashlib.sha256(_relaxed_body(whole)).digest()).decode()
    streamed = RelaxedBodyHash()
    start = 0
    for size in cuts:
        streamed.update(body[start : start + size])
        start += size
    streamed.update(body[start:])
    assert streamed.b64digest() == want
