"""The DATA stream of SMTP decoded in pieces, without sockets: pure, so a 50 MB message is
never held whole and every piece can go to the spool as it arrives.

RFC 5321 4.5.2: the content ends with a line holding only "."; a "." starting any other line
was doubled by the client and is removed. Lines are delimited by CRLF (a bare LF is part of
its line, as aiosmtpd reads them). The content ends at the first CRLF "." CRLF (`END`) of
the stream as if a CRLF came before it (so a first line "." ends an empty message).

The reader must not read past the end (what follows belongs to the next command), so it
asks the decoder what to read next (`wanted`): up to and including the next `END` in its
buffer (`readuntil`), or, when the bytes already read could begin an `END`, exactly the few
bytes that would finish it. A piece may end anywhere else; bytes at its end that could begin
an `END` are held back until the next piece tells.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["END", "DataDecoder", "DataState"]

END = b"\r\n.\r\n"


class DataState(Enum):
    NOMINAL = "nominal"
    TOO_LONG = "too long"
    """A line longer than the limit: the content is read to its end, then refused (500)."""
    TOO_MUCH = "too much"
    """More bytes than the size limit: read to the end, then refused (552)."""


def _find_end(before: bytes, data: bytes) -> int | None:
    """Where the first END starts in `data` (-2 or -1: in the two bytes before it), or None."""
    at = (before + data[:4]).find(END)  # an END that begins in `before`
    if at >= 0:
        return at - 2
    at = data.find(END)
    return at if at >= 0 else None


def _partial(data: bytes) -> int:
    """Length of the longest end of `data` that is a proper beginning of END."""
    for length in (4, 3, 2, 1):
        if data.endswith(END[:length]):
            return length
    return 0


class DataDecoder:
    def __init__(self, *, size_limit: int, line_limit: int) -> None:
        self._size_limit = size_limit
        self._line_limit = line_limit
        self._before = b"\r\n"
        """The two bytes before the held ones (at first: the CRLF the content follows)."""
        self._held = b""
        """Bytes read but not decoded yet: they could begin the end of the content."""
        self._line = 0
        """Length of the line in progress (the bytes after the last CRLF)."""
        self._cr = b""
        self.size = 0
        """Bytes of content read so far, before the end line (as the client sent them)."""
        self.state = DataState.NOMINAL
        self.done = False

    def wanted(self) -> int:
        """Bytes the reader must read next, exactly, to learn whether the content ends there
        (0: read up to the next END instead)."""
        partial = _partial(self._before + self._held)
        return len(END) - partial if partial else 0

    def feed(self, piece: bytes) -> bytes:
        """The content in `piece` with the transparency dots removed (b"" once refused).

        Sets `done` when the end of the content is in `piece` (which then ends with it).
        The usual piece is copied once (by the dots' `replace`): a 20 MB message is decoded
        at memory speed.
        """
        before = self._before
        data = self._held + piece if self._held else piece
        self._held = b""
        end = _find_end(before, data)
        if end is not None:
            self.done = True
            raw = data[: end + 2]  # the CRLF of END ends the last line
        else:
            tail = data[-4:] if len(data) >= 4 else before + data
            keep = min(_partial(tail), len(data))
            raw = data[: len(data) - keep]
            self._held = data[len(data) - keep :]
        self._before = raw[-2:] if len(raw) >= 2 else (before + raw)[-2:]
        self.size += len(raw)
        self._check(raw)
        if self.state is not DataState.NOMINAL:
            return b""
        # The first line loses its dot here, every other one in the replace: a piece never
        # starts a later line, since a CRLF ending one is held back (it may begin END).
        if before == b"\r\n" and raw[:1] == b".":
            raw = raw[1:]
        return raw.replace(b"\r\n.", b"\r\n")

    def _check(self, piece: bytes) -> None:
        """The first limit broken decides the reply, in the order aiosmtpd finds them: line
        by line, a line's length before the size it brings (a line that cannot end within
        the limit is too long already)."""
        if self.state is not DataState.NOMINAL:
            return  # refused already: the rest is only read to its end
        # A CR ending the last piece may start this one's CRLF.
        text = self._cr + piece if self._cr else piece
        if self._within_limits(text):
            return
        self._cr = b"\r" if text.endswith(b"\r") else b""
        lines = text[: len(text) - len(self._cr)].split(b"\r\n")
        lines[0] = b"x" * self._line + lines[0]  # the line in progress (at most the limit)
        ended = self.size - len(lines[-1]) - len(self._cr)  # bytes up to the last line end
        longest = max(map(len, lines)) + 2
        if longest > self._line_limit or (self._size_limit and ended > self._size_limit):
            self.state = self._first_broken(lines, ended)
        self._line = len(lines[-1])

    def _within_limits(self, text: bytes) -> bool:
        """The usual case, without splitting `text` into lines: True (and the state moved
        on) when no line is too long and the size is within its limit. A line is too long
        when no CRLF ends within `room` bytes of its start: one `rfind` per `room` bytes."""
        cr = b"\r" if text.endswith(b"\r") else b""
        n = len(text) - len(cr)
        room = self._line_limit - 2  # the longest line allowed, without its CRLF
        start = -self._line  # where the line in progress began, relative to `text`
        while start + room + 2 <= n:
            last = text.rfind(b"\r\n", max(start, 0), start + room + 2)
            if last < 0:
                return False  # a line too long: the exact order of breaks is found slowly
            start = last + 2
        last = text.rfind(b"\r\n", max(start, 0), n)
        line = n - (last + 2 if last >= 0 else start)
        ended = self.size - line - len(cr)
        if line > room or (self._size_limit and ended > self._size_limit):
            return False
        self._cr, self._line = cr, line
        return True

    def _first_broken(self, lines: list[bytes], ended: int) -> DataState:
        size = ended - sum(len(line) + 2 for line in lines[:-1])  # before this piece's lines
        for line in lines[:-1]:
            if len(line) + 2 > self._line_limit:
                return DataState.TOO_LONG
            size += len(line) + 2
            if self._size_limit and size > self._size_limit:
                return DataState.TOO_MUCH
        if len(lines[-1]) + 2 > self._line_limit:
            return DataState.TOO_LONG
        return DataState.NOMINAL
