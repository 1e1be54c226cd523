"""The DATA stream of SMTP decoded in pieces, without sockets: pure, so a 50 MB message is
never held whole and every piece can go to the spool as it arrives.

RFC 5321 4.5.2: the content ends with a line holding only "."; a "." starting any other line
was doubled by the client and is removed. Lines are delimited by CRLF (a bare LF is part of
its line, as aiosmtpd reads them). The reader hands over pieces that each end either where
the stream buffer was full or right after a ".\\r\\n" (`SEARCH`), so the end is found without
reading past it: what follows the end belongs to the next command.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["SEARCH", "DataDecoder", "DataState"]

SEARCH = b".\r\n"
"""What the reader waits for: the end of DATA always ends with it."""

_END = b"\r\n.\r\n"


class DataState(Enum):
    NOMINAL = "nominal"
    TOO_LONG = "too long"
    """A line longer than the limit: the content is read to its end, then refused (500)."""
    TOO_MUCH = "too much"
    """More bytes than the size limit: read to the end, then refused (552)."""


class DataDecoder:
    def __init__(self, *, size_limit: int, line_limit: int) -> None:
        self._size_limit = size_limit
        self._line_limit = line_limit
        self._tail = b"\r\n"
        """The last two bytes seen: the content starts at the start of a line."""
        self._line = 0
        """Length of the line in progress (the bytes after the last CRLF)."""
        self._cr = b""
        self.size = 0
        """Bytes of content read so far, before the end line (as the client sent them)."""
        self.state = DataState.NOMINAL
        self.done = False

    def feed(self, piece: bytes) -> bytes:
        """The content in `piece` with the transparency dots removed (b"" once refused).

        Sets `done` when `piece` ends with the end-of-data line.
        """
        context = self._tail + piece
        if context.endswith(_END) and len(context) >= len(_END):
            self.done = True
            piece = piece[: len(piece) - 3]  # the end line; its CRLF ends the last line
            context = context[: len(context) - 3]
        self._tail = context[-2:]
        self.size += len(piece)
        self._check(piece)
        if self.state is not DataState.NOMINAL:
            return b""
        return context.replace(b"\r\n.", b"\r\n")[2:]

    def _check(self, piece: bytes) -> None:
        """The first limit broken decides the reply, in the order aiosmtpd finds them: line
        by line, a line's length before the size it brings (a line that cannot end within
        the limit is too long already)."""
        if self.state is not DataState.NOMINAL:
            return  # refused already: the rest is only read to its end
        text = self._cr + piece  # a CR ending the last piece may start this one's CRLF
        self._cr = b"\r" if text.endswith(b"\r") else b""
        lines = text[: len(text) - len(self._cr)].split(b"\r\n")
        lines[0] = b"x" * self._line + lines[0]  # the line in progress (at most the limit)
        ended = self.size - len(lines[-1]) - len(self._cr)  # bytes up to the last line end
        longest = max(map(len, lines)) + 2
        if longest > self._line_limit or (self._size_limit and ended > self._size_limit):
            self.state = self._first_broken(lines, ended)
        self._line = len(lines[-1])

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
