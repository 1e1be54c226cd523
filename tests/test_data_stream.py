"""The streamed DATA decoder against aiosmtpd's line-by-line rules, and the streamed DKIM body
hash against the whole-body one, for any content cut into any pieces a reader can return."""

from __future__ import annotations

import base64
import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from relay.submission.data_stream import END, DataDecoder, DataState
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


def decode(
    stream: bytes, arrivals: list[int], reader_limit: int = LINE_LIMIT, **limits: int
) -> tuple[bytes, DataState, int]:
    """Drive the decoder as the server does, over a StreamReader of limit `reader_limit`
    whose buffer fills by `arrivals` bytes at a time: (content, state, bytes left unread)."""
    decoder = DataDecoder(**limits)
    out, pos, buffered = b"", 0, 0
    sizes = iter(arrivals)
    while not decoder.done:
        wanted = decoder.wanted()
        if wanted:
            piece = stream[pos : pos + wanted]
        else:
            while True:  # readuntil(END), or read(consumed) on LimitOverrunError
                buffer = stream[pos : pos + buffered]
                at = buffer.find(END)
                if at >= 0:
                    piece = buffer[:at] if at > reader_limit else buffer[: at + len(END)]
                    break
                if len(buffer) > reader_limit:
                    piece = buffer[: len(buffer) - len(END) + 1]
                    break
                buffered += next(sizes, 7)
        assert piece, "the reader always hands over something"
        pos += len(piece)
        buffered = max(0, buffered - len(piece))
        out += decoder.feed(piece)
    content = out if decoder.state is DataState.NOMINAL else b""
    return content, decoder.state, len(stream) - pos


line = st.lists(
    st.sampled_from(
        [b"a", b".", b" ", b"\t", b"\n", b"\r", b"x" * 30, b"\r\n.", b"x" * 37, b"x" * 97]
    ),
    max_size=6,
).map(b"".join)
"""Lines around both line limits tried (40 and 100 with CRLF) and longer, bare CR and LF."""


@settings(max_examples=1500, deadline=None)
@given(
    lines=st.lists(line, max_size=12),
    after=st.sampled_from([b"", b"QUIT\r\n", b"MAIL FROM:<a@b>\r\n"]),
    arrivals=st.lists(st.integers(1, 90), max_size=60),
    size_limit=st.sampled_from([0, 30, 200]),
    line_limit=st.sampled_from([LINE_LIMIT, 100]),
    reader_limit=st.sampled_from([LINE_LIMIT, 300]),
)
def test_decoder_matches_aiosmtpd_however_the_bytes_arrive(
    lines, after, arrivals, size_limit, line_limit, reader_limit
) -> None:
    """Whatever the reader's limit: the server raises it during DATA (bigger pieces)."""
    stream = b"".join(x + b"\r\n" for x in lines) + b".\r\n" + after
    want = reference(stream, size_limit=size_limit, line_limit=line_limit)
    got = decode(stream, arrivals, reader_limit, size_limit=size_limit, line_limit=line_limit)
    assert got == want


def test_the_end_line_alone_is_an_empty_message() -> None:
    decoder = DataDecoder(size_limit=0, line_limit=1000)
    assert decoder.wanted() == 3, "the content starts after a CRLF: read what could end it"
    assert decoder.feed(b".\r\n") == b"" and decoder.done and decoder.size == 0


def test_prose_lines_ending_in_a_period_are_not_the_end() -> None:
    decoder = DataDecoder(size_limit=0, line_limit=1000)
    assert decoder.feed(b"Hi.\r\n..\r\nBye.\r\n") == b"Hi.\r\n.\r\nBye." and not decoder.done
    assert decoder.wanted() == 3, "held: the CRLF that could begin the end"
    assert decoder.feed(b"x\r\n") == b"\r\nx" and not decoder.done
    assert decoder.feed(b".\r\n") == b"\r\n" and decoder.done


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


def test_an_end_that_straddles_two_exact_reads_is_found_without_reading_past_it() -> None:
    """ "x", an empty line, then the end: the buffer was cut after "x\\r"."""
    decoder = DataDecoder(size_limit=0, line_limit=1000)
    assert decoder.feed(b"x\r") == b"x" and decoder.wanted() == 4
    assert decoder.feed(b"\n\r\n.") == b"\r\n" and decoder.wanted() == 2
    assert decoder.feed(b"\r\n") == b"\r\n" and decoder.done
