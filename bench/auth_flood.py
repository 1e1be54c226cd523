"""A customer's login latency during an AUTH flood, against the same login with no flood.

`relay run` on loopback (implicit TLS; Redis with `appendfsync always`, as embedded). 250
hostile TLS sessions from 10 source addresses (127.0.0.11-20) send AUTH with a wrong
password and a new login each time, in two shapes:

- burst (issue 17's finding): the 250 send one AUTH each at the same moment, and the
  customer logs in right after them; again for every sample;
- sustained: each session sends its next AUTH as soon as the last is answered, on the same
  session (reconnecting when the relay closes it), the whole time the customer logs in.

The guard's delays and locks are set out of reach, so the flood never slows itself down:
what keeps the customer's login fast is the hashing queue alone. The customer logs in from
an address it succeeded from before (`known_ip_for`), with a different account each time
so that no password is in the cache of verified logins: every measured login is hashed.
Latency is from connect to the `235` (TCP, TLS, EHLO, AUTH). Baseline in the same run: the
same logins with no flood; the ratios are what to compare across machines.

    .venv/bin/python -m bench.auth_flood [--logins 30] [--flood 250]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import functools
import signal
import ssl
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench.net import free_port, save_results, wait_port
from relay.accounts import AccountStore
from relay.clock import SystemClock
from relay.embedded_redis import EmbeddedRedis
from relay.redis_client import connect
from relay.submission.guard import AuthGuard, AuthPolicy
from relay.tls import ensure_self_signed

PASSWORD = "customer-password-1"
OFFICE = "127.0.0.100"
"""Where the customers logged in from before: known to the guard."""
HOSTILE = [f"127.0.0.{n}" for n in range(11, 21)]
NETWORK_ERRORS = (OSError, ssl.SSLError, ConnectionError, TimeoutError)


class Session:
    """One SMTP session over implicit TLS: lines in, reply codes out."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, tls: ssl.SSLContext, source: str) -> Session:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=tls, server_hostname="localhost", local_addr=(source, 0)
        )
        session = cls(reader, writer)
        await session.reply(220)
        await session.command(b"EHLO bench.test", 250)
        return session

    async def reply(self, expect: int | None = None) -> int:
        while True:
            line = await self.reader.readline()
            if not line:
                raise ConnectionError("closed")
            if line[3:4] != b"-":
                code = int(line[:3])
                if expect is not None and code != expect:
                    raise ConnectionError(f"expected {expect}: {line!r}")
                return code

    async def send_auth(self, login: str, password: str) -> None:
        blob = base64.b64encode(f"\0{login}\0{password}".encode())
        self.writer.write(b"AUTH PLAIN " + blob + b"\r\n")
        await self.writer.drain()

    async def command(self, line: bytes, expect: int | None = None) -> int:
        self.writer.write(line + b"\r\n")
        await self.writer.drain()
        return await self.reply(expect)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(*NETWORK_ERRORS):
            await asyncio.wait_for(self.writer.wait_closed(), 2)


async def customer_login(port: int, tls: ssl.SSLContext, login: str, refused: Counter) -> float:
    """Seconds from connect to the answer of one login; an answer other than 235 is counted
    in `refused`."""
    started = time.perf_counter()
    session = await Session.open(port, tls, OFFICE)
    try:
        await session.send_auth(login, PASSWORD)
        code = await session.reply()
    finally:
        await session.close()
    if code != 235:
        refused[code] += 1
    return time.perf_counter() - started


class Attacker:
    """One hostile session; `send` and `answer` are one AUTH, split so that a burst can be
    sent by all attackers before any waits for its answer."""

    def __init__(self, n: int, port: int, tls: ssl.SSLContext, seen: Counter) -> None:
        self.n, self.port, self.tls, self.seen = n, port, tls, seen
        self.session: Session | None = None
        self.attempts = 0

    async def send(self) -> None:
        while self.session is None:
            try:
                self.session = await Session.open(
                    self.port, self.tls, HOSTILE[self.n % len(HOSTILE)]
                )
            except NETWORK_ERRORS:
                self.seen["connect failed"] += 1
                await asyncio.sleep(0.05)
        self.attempts += 1
        try:
            await self.session.send_auth(f"intruder{self.n}.{self.attempts}", "wrong password")
        except NETWORK_ERRORS:
            await self._lost()

    async def answer(self) -> None:
        if self.session is None:
            return
        try:
            self.seen[str(await self.session.reply())] += 1
        except NETWORK_ERRORS:
            await self._lost()

    async def _lost(self) -> None:
        self.seen["session closed"] += 1
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()


def ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p99_ms": round(ordered[max(0, int(len(ordered) * 0.99) - 1)] * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


async def burst(attackers: list[Attacker], login: Callable[[], Awaitable[float]]) -> float:
    """Every attacker sends one AUTH; then the customer logs in; then all answers are read."""
    await asyncio.gather(*(a.send() for a in attackers))
    latency = await login()
    await asyncio.gather(*(a.answer() for a in attackers))
    return latency


async def sustained(attackers: list[Attacker], stop: asyncio.Event) -> None:
    async def loop(attacker: Attacker) -> None:
        while not stop.is_set():
            await attacker.send()
            await attacker.answer()

    await asyncio.gather(*(loop(a) for a in attackers))


async def main(logins: int, flood: int) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="relay-bench-auth-"))
    redis_server = EmbeddedRedis(work / "redis", port=free_port())
    redis_server.start()
    cert, key = work / "cert.pem", work / "key.pem"
    ensure_self_signed(cert, key, "localhost")
    tls = ssl.create_default_context(cafile=str(cert))
    port = free_port()
    config = work / "relay.toml"
    config.write_text(
        f'hostname = "relay.bench"\n[redis]\nurl = "{redis_server.url}"\n'
        f'[tls]\ncert = "{cert}"\nkey = "{key}"\n'
        f'[[submission.listeners]]\naddress = "127.0.0.1:{port}"\ntls = "implicit"\n'
        "[submission.auth_guard]\n"  # no delays, no locks: the flood never slows itself
        "delay_after = 1000000\nlock_after = 1000000\nip_lock_after = 1000000\n"
        '[delivery]\nworkers = 0\n[log]\nlevel = "error"\n'
    )
    redis = connect(redis_server.url, timeout=10)
    clock = SystemClock()
    accounts = AccountStore(redis, clock)
    guard = AuthGuard(redis, AuthPolicy(), clock)
    names = iter([f"customer{i}" for i in range(3 * logins + 1)])
    for i in range(3 * logins + 1):
        await accounts.add(f"customer{i}", PASSWORD)
        await guard.succeeded(f"customer{i}", OFFICE, clock.now())  # it logged in from there
    await redis.aclose()
    relay = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "relay",
        "--config",
        str(config),
        "run",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    seen: Counter = Counter()
    refused: dict[str, Counter] = {
        "no flood": Counter(),
        "burst": Counter(),
        "sustained": Counter(),
    }
    attackers = [Attacker(n, port, tls, seen) for n in range(flood)]
    try:
        await wait_port(port)
        await customer_login(port, tls, next(names), refused["no flood"])  # warm up
        quiet = [
            await customer_login(port, tls, next(names), refused["no flood"]) for _ in range(logins)
        ]

        bursts = []
        for _ in range(logins):
            login = functools.partial(customer_login, port, tls, next(names), refused["burst"])
            bursts.append(await burst(attackers, login))
        burst_seen = dict(seen)
        seen.clear()

        stop = asyncio.Event()
        flooding = asyncio.create_task(sustained(attackers, stop))
        await asyncio.sleep(2.0)  # every attacker sending
        seen.clear()
        started = time.perf_counter()
        flooded = []
        for _ in range(logins):
            flooded.append(await customer_login(port, tls, next(names), refused["sustained"]))
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
        answered = sum(v for k, v in seen.items() if k.isdigit())
        stop.set()
        await asyncio.wait_for(flooding, 60)
    finally:
        for attacker in attackers:
            await attacker.close()
        relay.send_signal(signal.SIGTERM)
        await relay.wait()
        redis_server.stop()
    quiet_ms, burst_ms, flooded_ms = ms(quiet), ms(bursts), ms(flooded)
    return {
        "customer login, no flood": quiet_ms,
        f"customer login, burst of {flood} guesses": burst_ms,
        f"customer login, {flood} sessions guessing non-stop": flooded_ms,
        "ratio burst/no flood p50, p99": [
            round(burst_ms["p50_ms"] / quiet_ms["p50_ms"], 1),
            round(burst_ms["p99_ms"] / quiet_ms["p99_ms"], 1),
        ],
        "ratio non-stop/no flood p50, p99": [
            round(flooded_ms["p50_ms"] / quiet_ms["p50_ms"], 1),
            round(flooded_ms["p99_ms"] / quiet_ms["p99_ms"], 1),
        ],
        "hostile replies in the bursts": burst_seen,
        "hostile AUTH answered per s, non-stop": round(answered / elapsed),
        "samples per row": logins,
        "customer logins not accepted": {k: dict(v) for k, v in refused.items()},
    }


def report(results: dict[str, object]) -> None:
    for name, value in results.items():
        print(f"{name:<48} {value}")
    save_results("auth_flood", results)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--logins", type=int, default=30, help="customer logins per row")
    parser.add_argument("--flood", type=int, default=250, help="hostile sessions")
    args = parser.parse_args()
    report(asyncio.run(main(args.logins, args.flood)))
