"""A fast counting SMTP sink for the benchmarks: keeps nothing but counts.

Plain ESMTP with PIPELINING (no TLS: the relay and Postfix both deliver in clear to it, as
opportunistic TLS does when the server offers none). Every message's `X-Bench-Id:` header is
counted, so the bench can check that each accepted message arrived exactly once.

Run as a child process of the bench:

    python -m bench.sink --port P

prints `ready` on stdout, then answers one JSON line per `stats` line read on stdin:
`{"messages": N, "recipients": R, "ids": {"id": count, ...}, "peers": {"ip": count}}`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections import Counter

_ID = b"\nX-Bench-Id: "
_EHLO = b"250-sink.bench\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 100000000\r\n"


class Counts:
    def __init__(self) -> None:
        self.messages = 0
        self.recipients = 0
        self.ids: Counter[str] = Counter()
        self.peers: Counter[str] = Counter()

    def as_json(self) -> str:
        return json.dumps(
            {
                "messages": self.messages,
                "recipients": self.recipients,
                "ids": dict(self.ids),
                "peers": dict(self.peers),
            }
        )


class SinkProtocol(asyncio.Protocol):
    def __init__(self, counts: Counts) -> None:
        self.counts = counts
        self.buffer = bytearray()
        self.in_data = False
        self.searched = 0
        self.rcpts = 0
        self.peer = "?"
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if peer else "?"
        transport.write(b"220 sink.bench ESMTP counting sink\r\n")

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        out: list[bytes] = []
        closing = False
        while True:
            if self.in_data:
                if self.buffer.startswith(b".\r\n"):
                    end = -2  # an empty message
                else:
                    end = self.buffer.find(b"\r\n.\r\n", max(0, self.searched - 4))
                if end < 0 and not self.buffer.startswith(b".\r\n"):
                    self.searched = len(self.buffer)
                    break
                self._message(bytes(self.buffer[: end + 2]) if end >= 0 else b"")
                del self.buffer[: end + 5]
                self.in_data = False
                self.searched = 0
                out.append(b"250 2.0.0 OK counted\r\n")
                continue
            newline = self.buffer.find(b"\n")
            if newline < 0:
                break
            line = bytes(self.buffer[:newline]).rstrip(b"\r")
            del self.buffer[: newline + 1]
            verb = line[:4].upper()
            if verb == b"EHLO":
                out.append(_EHLO)
            elif verb in (b"HELO", b"NOOP"):
                out.append(b"250 2.0.0 OK\r\n")
            elif verb in (b"MAIL", b"RSET"):
                self.rcpts = 0
                out.append(b"250 2.0.0 OK\r\n")
            elif verb == b"RCPT":
                self.rcpts += 1
                out.append(b"250 2.1.5 OK\r\n")
            elif verb == b"DATA":
                self.in_data = True
                out.append(b"354 go ahead\r\n")
            elif verb == b"QUIT":
                out.append(b"221 2.0.0 bye\r\n")
                closing = True
                break
            else:
                out.append(b"502 5.5.1 not here\r\n")
        if self.transport is not None and out:
            self.transport.write(b"".join(out))
        if closing and self.transport is not None:
            self.transport.close()

    def _message(self, body: bytes) -> None:
        counts = self.counts
        counts.messages += 1
        counts.recipients += self.rcpts
        counts.peers[self.peer] += 1
        if body.startswith(_ID[1:]):  # the first header line
            start = len(_ID) - 1
        else:
            start = body.find(_ID)
            if start < 0:
                return
            start += len(_ID)
        counts.ids[body[start : body.find(b"\r", start)].decode("ascii", "replace")] += 1


async def main(host: str, port: int) -> None:
    counts = Counts()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SinkProtocol(counts), host, port, backlog=1024)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print("ready", flush=True)
    while line := await reader.readline():
        command = line.strip()
        if command == b"stats":
            print(counts.as_json(), flush=True)
        elif command == b"reset":
            counts.__init__()  # type: ignore[misc]
            print("{}", flush=True)
    server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    options = parser.parse_args()
    asyncio.run(main(options.host, options.port))
