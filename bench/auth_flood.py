"""A customer's login latency during an AUTH flood, against the same login with no flood.

`relay run` on loopback (implicit TLS, embedded-style Redis with `appendfsync always`).
The flood: 250 concurrent hostile sessions from 10 source addresses (127.0.0.11-20), each
sending AUTH with a wrong password and a new login, again as soon as it is answered, on
the same TLS session (reconnecting when the relay closes it). The guard's delays and locks
are set out of reach, so the flood never slows itself down: what keeps the customer's
login fast is the hashing queue alone. The customer logs in from an address it succeeded
from before (`known_ip_for`), with a different account each time so that no password is
in the cache of verified logins: every measured login is hashed. Baseline, in the same
run: the same kind of login with no flood. The ratio is what to compare across machines.

    .venv/bin/python -m bench.auth_flood [--logins 50] [--flood 250]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import signal
import ssl
import statistics
import sys
import tempfile
import time
from collections import Counter
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

    async def command(self, line: bytes, expect: int | None = None) -> int:
        self.writer.write(line + b"\r\n")
        await self.writer.drain()
        return await self.reply(expect)

    async def auth(self, login: str, password: str) -> int:
        blob = base64.b64encode(f"\0{login}\0{password}".encode())
        return await self.command(b"AUTH PLAIN " + blob)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
            await asyncio.wait_for(self.writer.wait_closed(), 2)


async def customer_login(port: int, tls: ssl.SSLContext, login: str, refused: Counter) -> float:
    """Seconds from connect to the answer of one login (TCP, TLS, EHLO, AUTH); an answer
    other than 235 is counted in `refused`."""
    started = time.perf_counter()
    session = await Session.open(port, tls, OFFICE)
    try:
        code = await session.auth(login, PASSWORD)
    finally:
        await session.close()
    if code != 235:
        refused[code] += 1
    return time.perf_counter() - started


async def hostile(n: int, port: int, tls: ssl.SSLContext, stop: asyncio.Event, seen: Counter):
    source = HOSTILE[n % len(HOSTILE)]
    attempt = 0
    while not stop.is_set():
        try:
            session = await Session.open(port, tls, source)
        except (OSError, ssl.SSLError, ConnectionError):
            seen["connect failed"] += 1
            await asyncio.sleep(0.05)
            continue
        try:
            while not stop.is_set():
                attempt += 1
                seen[await session.auth(f"intruder{n}.{attempt}", "wrong password")] += 1
        except (OSError, ssl.SSLError, ConnectionError):
            seen["closed"] += 1
        finally:
            await session.close()


def ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p99_ms": round(ordered[max(0, int(len(ordered) * 0.99) - 1)] * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


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
    names = [f"customer{i}" for i in range(2 * logins)]
    for name in names:
        await accounts.add(name, PASSWORD)
        await guard.succeeded(name, OFFICE, clock.now())  # it logged in from there before
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
    quiet_refused: Counter = Counter()
    flooded_refused: Counter = Counter()
    try:
        await wait_port(port)
        await customer_login(port, tls, names[0], quiet_refused)  # warm up
        quiet = [await customer_login(port, tls, name, quiet_refused) for name in names[1:logins]]

        stop = asyncio.Event()
        attackers = [asyncio.create_task(hostile(n, port, tls, stop, seen)) for n in range(flood)]
        await asyncio.sleep(2.0)  # every attacker connected and sending
        seen.clear()
        started = time.perf_counter()
        flooded = []
        for name in names[logins:]:
            flooded.append(await customer_login(port, tls, name, flooded_refused))
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
        stop.set()
        await asyncio.wait(attackers, timeout=30)
    finally:
        relay.send_signal(signal.SIGTERM)
        await relay.wait()
        redis_server.stop()
    quiet_ms, flooded_ms = ms(quiet), ms(flooded)
    return {
        "customer login, no flood": quiet_ms,
        f"customer login, {flood} hostile sessions": flooded_ms,
        "ratio p50": round(flooded_ms["p50_ms"] / quiet_ms["p50_ms"], 2),
        "ratio p99": round(flooded_ms["p99_ms"] / quiet_ms["p99_ms"], 2),
        "hostile AUTH answered per s": round(
            sum(v for k, v in seen.items() if isinstance(k, int)) / elapsed
        ),
        "hostile replies": {str(k): v for k, v in seen.most_common()},
        "samples": len(flooded),
        "customer logins not accepted": {
            "no flood": {str(k): v for k, v in quiet_refused.items()},
            "flood": {str(k): v for k, v in flooded_refused.items()},
        },
    }


def report(results: dict[str, object]) -> None:
    for name, value in results.items():
        print(f"{name:<38} {value}")
    save_results("auth_flood", results)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--logins", type=int, default=50, help="customer logins per phase")
    parser.add_argument("--flood", type=int, default=250, help="concurrent hostile sessions")
    args = parser.parse_args()
    report(asyncio.run(main(args.logins, args.flood)))
