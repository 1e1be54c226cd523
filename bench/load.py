"""The benchmark's SMTP load generator: N concurrent sessions sending M messages.

A raw asyncio client (no library overhead to speak of, no pipelining: the relay offers none
and a client cannot count on it), so the numbers are the server's. Per message it measures
the accept latency: from `MAIL FROM` sent to the `250` after the final dot.

Each message carries `X-Bench-Id: <n>` so a counting sink can check what arrived. Sessions
log in (AUTH PLAIN) when given accounts, round robin over them, one account per session,
and send `per_session` messages before QUIT and a new session.

    python -m bench.load --port 2465 --tls implicit --login bench --password-stdin ...
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import ipaddress
import itertools
import json
import ssl
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

TlsMode = Literal["plain", "starttls", "implicit"]


@dataclass(frozen=True)
class LoadSpec:
    port: int
    messages: int = 1000
    sessions: int = 50
    size: int = 2_000
    """Approximate message size in bytes (headers included)."""
    recipients: int = 1
    per_session: int = 20
    """Messages per session before QUIT (and a new session)."""
    tls: TlsMode = "implicit"
    accounts: Sequence[tuple[str, str]] = ()
    """(login, password) to AUTH with, round robin per session; empty: no AUTH."""
    auth: bool = True
    """False: no AUTH, the account only names the sender (`LOGIN@load.bench`)."""
    host: str = "127.0.0.1"
    first_id: int = 0
    timeout: float = 60.0
    more_ports: tuple[int, ...] = ()
    """Further servers (e.g. more relay processes): session i goes to port number i mod n."""
    warmup: bool = False
    """Open (and log in) every session's first connection before the clock starts, so that
    a latency measured at a rate is the accept path's, not the logins' burst."""
    rate: float | None = None
    """Offered load in messages/s over all sessions (open loop: latency at a given rate);
    None: every session sends as fast as the server answers (closed loop: throughput)."""


@dataclass
class LoadResult:
    acked: dict[str, str] = field(default_factory=dict)
    """X-Bench-Id -> the server's text of the final 250 (holds its queue id)."""
    latencies: list[float] = field(default_factory=list)
    refusals: Counter[str] = field(default_factory=Counter)
    """"STAGE CODE" -> count, for every non-2xx/3xx reply."""
    errors: Counter[str] = field(default_factory=Counter)
    sessions: int = 0
    logins: int = 0
    started: float = 0.0
    finished: float = 0.0
    recipients_acked: int = 0

    @property
    def seconds(self) -> float:
        return self.finished - self.started

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


class Refused(Exception):
    def __init__(self, stage: str, code: int, text: bytes) -> None:
        super().__init__(f"{stage} {code} {text[:200]!r}")
        self.stage = stage
        self.code = code


def body_for(ident: str, size: int, sender: str = "load@load.bench") -> bytes:
    head = (
        f"From: <{sender}>\r\nTo: <u@example.com>\r\nSubject: bench {ident}\r\n"
        f"Message-ID: <bench-{ident}@load.bench>\r\nX-Bench-Id: {ident}\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
    ).encode()
    line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
    lines = max(1, (size - len(head)) // len(line))
    return head + line * lines


class Session:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def reply(self, stage: str, expect: int) -> bytes:
        while True:
            line = await self.reader.readline()
            if not line:
                raise ConnectionError(f"closed at {stage}")
            if line[3:4] != b"-":
                break
        code = int(line[:3])
        if code != expect:
            raise Refused(stage, code, line)
        return line

    async def command(self, line: bytes, stage: str, expect: int) -> bytes:
        self.writer.write(line + b"\r\n")
        return await self.reply(stage, expect)


async def open_session(
    spec: LoadSpec, context: ssl.SSLContext | None, account: tuple[str, str] | None, port: int
) -> Session:
    implicit = spec.tls == "implicit"
    reader, writer = await asyncio.open_connection(
        spec.host,
        port,
        ssl=context if implicit else None,
        server_hostname=spec.host if implicit else None,
        limit=1 << 16,
    )
    session = Session(reader, writer)
    try:
        await session.reply("greeting", 220)
        await session.command(b"EHLO load.bench", "ehlo", 250)
        if spec.tls == "starttls":
            assert context is not None
            await session.command(b"STARTTLS", "starttls", 220)
            await writer.start_tls(context, server_hostname=spec.host)
            await session.command(b"EHLO load.bench", "ehlo", 250)
        if account is not None and spec.auth:
            login, password = account
            blob = base64.b64encode(f"\0{login}\0{password}".encode())
            await session.command(b"AUTH PLAIN " + blob, "auth", 235)
    except BaseException:  # refused before the session began: hang up, as a client would
        writer.close()
        raise
    return session


async def run(spec: LoadSpec, context: ssl.SSLContext | None = None) -> LoadResult:
    """Send `spec.messages` messages; every outcome is counted, nothing raises."""
    result = LoadResult()
    ids: Iterator[int] = iter(range(spec.first_id, spec.first_id + spec.messages))
    accounts = itertools.cycle(spec.accounts) if spec.accounts else None
    if not ipaddress.ip_address(spec.host).is_loopback:
        raise ValueError(f"load only goes to loopback addresses, not {spec.host}")
    # The same filler for every message; From: is the envelope sender, as the relay's
    # sender identities require (each bench account owns LOGIN@load.bench).
    template = body_for("{ID}", spec.size, "{FROM}")
    next_slot = 0.0

    async def pace() -> None:
        nonlocal next_slot
        if not spec.rate:
            return
        now = time.monotonic()
        next_slot = max(now, next_slot + 1.0 / spec.rate)
        if next_slot > now:
            await asyncio.sleep(next_slot - now)

    ready = asyncio.Event()
    arrived = 0

    def arrive() -> None:
        nonlocal arrived
        arrived += 1
        if arrived == spec.sessions:
            result.started = time.monotonic()
            ready.set()

    ports = (spec.port, *spec.more_ports)

    async def worker(index: int) -> None:
        port = ports[index % len(ports)]
        first = spec.warmup
        while True:
            account = next(accounts) if accounts is not None else None
            sender = f"{account[0]}@load.bench" if account else "load@load.bench"
            batch = list(itertools.islice(ids, spec.per_session))
            if not batch:
                if first:
                    arrive()
                return
            session = None
            try:
                async with asyncio.timeout(spec.timeout * len(batch)):
                    session = await open_session(spec, context, account, port)
                    result.sessions += 1
                    result.logins += account is not None and spec.auth
                    if first:
                        first = False
                        arrive()
                        await ready.wait()
                    for n in batch:
                        await one(session, n, sender)
                    with contextlib.suppress(Refused, ConnectionError):
                        await session.command(b"QUIT", "quit", 221)
            except Refused as exc:
                result.refusals[f"{exc.stage} {exc.code}"] += 1
            except (OSError, ConnectionError, TimeoutError, ssl.SSLError) as exc:
                result.errors[type(exc).__name__] += 1
            finally:
                if first:  # failed before the start line: do not hold the others back
                    first = False
                    arrive()
                if session is not None:
                    session.writer.close()
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(session.writer.wait_closed(), 2)

    async def one(session: Session, n: int, sender: str) -> None:
        ident = str(n)
        rcpts = [f"u{n}.{k}@example.com" for k in range(spec.recipients)]
        data = template.replace(b"{ID}", ident.encode()).replace(b"{FROM}", sender.encode())
        await pace()
        started = time.perf_counter()
        try:
            await session.command(f"MAIL FROM:<{sender}>".encode(), "mail", 250)
            for rcpt in rcpts:
                await session.command(f"RCPT TO:<{rcpt}>".encode(), "rcpt", 250)
            await session.command(b"DATA", "data", 354)
            session.writer.write(data)
            final = await session.command(b".", "dot", 250)
        except Refused as exc:
            result.refusals[f"{exc.stage} {exc.code}"] += 1
            if exc.stage != "dot":
                await session.command(b"RSET", "rset", 250)
            return
        result.latencies.append(time.perf_counter() - started)
        result.acked[ident] = final[4:].decode("ascii", "replace").strip()
        result.recipients_acked += len(rcpts)

    result.started = time.monotonic()
    await asyncio.gather(*(worker(i) for i in range(spec.sessions)))
    result.finished = time.monotonic()
    return result


def client_context(cafile: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=cafile)
    if cafile is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def summary(result: LoadResult) -> dict[str, object]:
    acked = len(result.acked)
    return {
        "acked": acked,
        "seconds": round(result.seconds, 3),
        "msgs_per_s": round(acked / result.seconds, 1) if result.seconds else 0,
        "p50_ms": round(result.percentile(0.50) * 1000, 2),
        "p99_ms": round(result.percentile(0.99) * 1000, 2),
        "max_ms": round(max(result.latencies, default=float("nan")) * 1000, 2),
        "sessions": result.sessions,
        "refusals": dict(result.refusals),
        "errors": dict(result.errors),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tls", choices=["plain", "starttls", "implicit"], default="implicit")
    parser.add_argument("--cafile", help="trust this CA (default: do not verify)")
    parser.add_argument("--login", help="AUTH PLAIN as this login (password on stdin)")
    parser.add_argument("--password-stdin", action="store_true")
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--size", type=int, default=2000)
    parser.add_argument("--recipients", type=int, default=1)
    parser.add_argument("--per-session", type=int, default=20)
    options = parser.parse_args()
    accounts: list[tuple[str, str]] = []
    if options.login:
        accounts = [(options.login, sys.stdin.readline().rstrip("\n"))]
    load_spec = LoadSpec(
        host=options.host,
        port=options.port,
        tls=options.tls,
        accounts=accounts,
        messages=min(options.messages, 200_000),
        sessions=min(options.sessions, 1000),
        size=options.size,
        recipients=min(options.recipients, 1000),
        per_session=options.per_session,
    )
    tls = client_context(options.cafile) if options.tls != "plain" else None
    print(json.dumps(summary(asyncio.run(run(load_spec, tls))), indent=2))
