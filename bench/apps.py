"""API sends/s against SMTP submissions/s in the same run, and the cost of an event append.

One relay process (a child) serves both doors as `relay run` does, over one SubmissionService:
the SMTP listener (STARTTLS, AUTH guard, DATA budget) and the whole HTTP app (`create_app`,
every router and middleware, uvicorn as `serve_http` configures it, plus TLS so that both
doors pay for it; `relay run` leaves TLS to a proxy); no delivery, so what is measured is
acceptance. The load generator (this process) sends N messages of 5 KB of text over C
concurrent connections, by SMTP (STARTTLS + AUTH once per session, then one transaction per
message) and by `POST /v1/messages` (kept-alive TLS connections, one request per message).
The issue's target: API/SMTP >= 1.

Both doors are measured in server CPU per message (the child's user + system time over the
round, from /proc): on a shared machine it is far steadier than throughput, which also
carries the client's cost. The HTTP client is a minimal one over asyncio streams (see
`api_load`), aiosmtplib the SMTP one; their CPU per message is shown too. Rounds are
alternated (SMTP, API, SMTP, …) and the median is shown.

Event append cost: one `delivered` event as the delivery worker appends it (one script call),
sequentially, against a bare Redis PING on the same connection.

    .venv/bin/python -m bench.apps [--messages 1000] [--concurrency 20] [--rounds 3]
    BENCH_APPS_PROFILE=/tmp/api.prof .venv/bin/python -m bench.apps   # cProfile the server
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiosmtplib

from bench.net import free_port, save_results, wait_port
from quota import QuotaStore
from relay.accounts import AccountStore
from relay.accounts.api_keys import ApiKeys
from relay.accounts.provisioning import create_account
from relay.clock import SystemClock
from relay.embedded_redis import EmbeddedRedis
from relay.events import EventDraft, EventStream
from relay.redis_client import connect
from relay.sender_auth import IdentityStore
from relay.tls import ensure_self_signed

PASSWORD = "bench-password-1"
SENDER = "bench@example.org"
TEXT = ("x" * 76 + "\n") * 65  # 5 KB of text
SMTP_BODY = (
    f"From: {SENDER}\r\nTo: r@example.com\r\nSubject: bench\r\n\r\n".encode()
    + TEXT.replace("\n", "\r\n").encode()
)


async def serve(config: Path) -> None:
    """The child: SMTP listener + HTTP app over one SubmissionService, until SIGTERM.

    Each door as `relay run` serves it: the SMTP listener with its AUTH guard and DATA
    budget, the whole HTTP app (`create_app`: every router, the body guard and the session
    middleware) on uvicorn as `serve_http` configures it. Only TLS is added to the HTTP
    listener (`relay run` serves plain HTTP behind a TLS proxy), so both doors pay for TLS."""
    from relay.app import open_redis, quota_store
    from relay.config import load_settings
    from relay.events import event_recorder
    from relay.logging import configure_logging
    from relay.queue import QueueStore
    from relay.sender_auth import IdentityCache
    from relay.spool import InflightBudget
    from relay.submission.guard import AuthGuard
    from relay.submission.server import start_listeners
    from relay.submission.service import SubmissionService
    from relay.tls import server_context
    from relay.web.api.deps_apps import app_services
    from relay.web.app import create_app, http_socket, serve_http
    from relay.web.services import WebServices

    settings = load_settings(config)
    configure_logging(settings.log)
    clock = SystemClock()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with open_redis(settings) as redis:
        quota = quota_store(redis, settings)
        service = SubmissionService(
            accounts=AccountStore(redis, clock),
            queue=QueueStore.from_settings(redis, clock, settings),
            quota=quota,
            settings=settings.submission,
            hostname=settings.hostname,
            clock=clock,
            store_timeout=settings.redis.timeout.seconds,
            identities=IdentityCache(IdentityStore(redis, clock), clock=clock.now),
            identities_mode=settings.sender_auth.identities,
            events=event_recorder(redis, settings, clock),
        )
        servers = await start_listeners(
            listeners=settings.submission.listeners,
            settings=settings.submission,
            service=service,
            tls=server_context(settings.tls.cert, settings.tls.key),
            hostname=settings.hostname,
            budget=InflightBudget(settings.spool.max_inflight),
            guard=AuthGuard.from_settings(redis, settings, clock),
        )
        app = create_app(
            WebServices.build(redis, settings, clock, quota=quota),
            secret=b"bench-session-secret-0123456789",
            apps=app_services(redis, settings, service, clock),
        )
        tls_files = {"ssl_certfile": str(settings.tls.cert), "ssl_keyfile": str(settings.tls.key)}
        await serve_http(app, http_socket(settings.http, reuse_port=False), stop, **tls_files)
        for listener in servers:
            listener.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc): less noisy than throughput
    on a shared machine, and what "costs more" means."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rates(name: str, n: int, c: int, seconds: float, latencies: list[float]) -> dict[str, object]:
    ordered = sorted(latencies)
    return {
        "door": name,
        "messages": n,
        "concurrency": c,
        "seconds": round(seconds, 3),
        "per_s": round(n / seconds, 1),
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
    }


async def smtp_load(port: int, tls: ssl.SSLContext, n: int, c: int) -> dict[str, object]:
    latencies: list[float] = []
    counts = [n // c + (i < n % c) for i in range(c)]

    async def session(count: int, s: int) -> None:
        async with aiosmtplib.SMTP(
            hostname="127.0.0.1", port=port, start_tls=True, tls_context=tls, timeout=60
        ) as smtp:
            await smtp.login("bench", PASSWORD)
            for i in range(count):
                started = time.perf_counter()
                await smtp.sendmail(SENDER, [f"s{s}-{i}@example.com"], SMTP_BODY)
                latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(session(k, s) for s, k in enumerate(counts)))
    return _rates("smtp", n, c, time.perf_counter() - started, latencies)


async def api_load(port: int, tls: ssl.SSLContext, key: str, n: int, c: int) -> dict[str, object]:
    """`POST /v1/messages` over C kept-alive TLS connections, one request at a time on each
    (as the SMTP sessions send one transaction at a time). The client is the least an HTTP/1.1
    client does: the JSON body made per request, the request (with httpx's headers) written,
    the status line, headers and Content-Length body read. httpx cost ~1.8 ms of CPU per
    request against aiosmtplib's ~0.4 ms per transaction, and the client shares the machine's
    cores with the relay: the throughput measured the client more than the door."""
    latencies: list[float] = []
    counts = [n // c + (i < n % c) for i in range(c)]
    head = (  # the headers httpx sends, so that the server parses as many
        f"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: */*\r\n"
        "Accept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\n"
        "User-Agent: bench.apps\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
    )

    async def sender(count: int, s: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
        try:
            for i in range(count):
                body = json.dumps(
                    {"from": SENDER, "to": [f"a{s}-{i}@example.com"], "subject": "bench"}
                    | {"text": TEXT}
                ).encode()
                started = time.perf_counter()
                writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
                status, length = _response_head(await reader.readuntil(b"\r\n\r\n"))
                answer = await reader.readexactly(length)
                latencies.append(time.perf_counter() - started)
                if status != 202:
                    raise RuntimeError(f"API answered {status}: {answer.decode()}")
        finally:
            writer.close()
            await writer.wait_closed()

    started = time.perf_counter()
    await asyncio.gather(*(sender(k, s) for s, k in enumerate(counts)))
    return _rates("api", n, c, time.perf_counter() - started, latencies)


def _response_head(head: bytes) -> tuple[int, int]:
    """(status, Content-Length) of an HTTP/1.1 response's head."""
    lines = head.decode("latin-1").split("\r\n")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    return int(lines[0].split(" ", 2)[1]), length


async def append_cost(url: str, n: int = 2000) -> dict[str, object]:
    redis = connect(url, timeout=5)
    stream = EventStream(redis, SystemClock(), retention=30 * 86400)
    await redis.ping()
    started = time.perf_counter()
    for _ in range(n):
        await redis.ping()
    ping = (time.perf_counter() - started) / n
    draft = EventDraft(
        "delivered",
        "0123456789abcdef",
        "r@example.com",
        time.time(),
        {"reply": "250 2.0.0 OK queued as 1234", "egress_ip": "127.0.0.2", "mx": "mx.example"},
    )
    started = time.perf_counter()
    for _ in range(n):
        await stream.append("bench", draft)
    append = (time.perf_counter() - started) / n
    await redis.aclose()
    return {
        "appends": n,
        "append_ms": round(append * 1000, 3),
        "ping_ms": round(ping * 1000, 3),
        "append_over_ping": round(append / ping, 2),
    }


def _median(rounds: list[dict[str, object]]) -> dict[str, object]:
    """The round of median throughput, with the median server CPU per message."""
    ordered = sorted(rounds, key=lambda r: float(str(r["per_s"])))
    chosen = dict(ordered[len(ordered) // 2])
    for key in ("server_cpu_ms", "client_cpu_ms"):
        chosen[key] = statistics.median(float(str(r[key])) for r in rounds)
    chosen["rounds"] = len(rounds)
    return chosen


async def main(messages: int, concurrency: int, rounds_of: int = 3) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="relay-bench-apps-"))
    redis_server = EmbeddedRedis(work / "redis", port=free_port())
    redis_server.start()
    cert, key_file = work / "cert.pem", work / "key.pem"
    ensure_self_signed(cert, key_file, "relay.bench")
    tls = ssl.create_default_context(cafile=str(cert))
    tls.check_hostname = False
    smtp_port, http_port = free_port(), free_port()
    config = work / "relay.toml"
    config.write_text(
        f'hostname = "relay.bench"\n[redis]\nurl = "{redis_server.url}"\n'
        f'[tls]\ncert = "{cert}"\nkey = "{key_file}"\n[spool]\ndir = "{work / "spool"}"\n'
        f'[[submission.listeners]]\naddress = "127.0.0.1:{smtp_port}"\ntls = "starttls"\n'
        f'[http]\nenabled = true\nlisten = "127.0.0.1:{http_port}"\n'
        '[log]\nlevel = "warning"\n[quota]\nper_minute = "1000000000/min"\n'
    )
    redis = connect(redis_server.url, timeout=5)
    await create_account(
        AccountStore(redis, SystemClock()),
        QuotaStore(redis, default_per_minute=10**9, per_recipient=10**9),
        login="bench",
        password=PASSWORD,
        daily=10**9,
    )
    await IdentityStore(redis, SystemClock()).mark_verified("bench", SENDER, "operator")
    _, api_key = await ApiKeys(redis, SystemClock()).add("bench")
    await redis.aclose()
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.apps",
        "serve",
        str(config),
        env=os.environ.copy(),
    )
    try:
        await wait_port(smtp_port)
        await wait_port(http_port)
        warm = max(20, messages // 20)
        await smtp_load(smtp_port, tls, warm, min(concurrency, warm))
        await api_load(http_port, tls, api_key, warm, min(concurrency, warm))
        rounds: dict[str, list[dict[str, object]]] = {"smtp": [], "api": []}
        for _ in range(rounds_of):  # alternated, so both doors see the same machine
            for door in ("smtp", "api"):
                cpu, client_cpu = cpu_seconds(child.pid), time.process_time()
                if door == "smtp":
                    found = await smtp_load(smtp_port, tls, messages, concurrency)
                else:
                    found = await api_load(http_port, tls, api_key, messages, concurrency)
                found["server_cpu_ms"] = round((cpu_seconds(child.pid) - cpu) * 1000 / messages, 3)
                found["client_cpu_ms"] = round(
                    (time.process_time() - client_cpu) * 1000 / messages, 3
                )
                rounds[door].append(found)
        smtp, api = (_median(rounds[d]) for d in ("smtp", "api"))
        events = await append_cost(redis_server.url)
    finally:
        child.send_signal(signal.SIGTERM)
        await asyncio.wait_for(child.wait(), 30)
        redis_server.stop()
    ratio = round(float(str(api["per_s"])) / float(str(smtp["per_s"])), 2)
    cpu_ratio = round(float(str(api["server_cpu_ms"])) / float(str(smtp["server_cpu_ms"])), 2)
    pairs = [  # each API round against the SMTP round just before it
        round(float(str(a["server_cpu_ms"])) / float(str(b["server_cpu_ms"])), 2)
        for b, a in zip(rounds["smtp"], rounds["api"], strict=True)
    ]
    results: dict[str, object] = {
        "smtp": smtp,
        "api": api,
        "api_over_smtp": ratio,
        "api_cpu_over_smtp_cpu": cpu_ratio,
        "api_cpu_over_smtp_cpu_per_round": pairs,
        "events": events,
    }
    for door in (smtp, api):
        print(
            f"{door['door']:>4}: {door['per_s']} msg/s  p50 {door['p50_ms']} ms"
            f"  p99 {door['p99_ms']} ms  server CPU {door['server_cpu_ms']} ms/msg"
            f" (client {door['client_cpu_ms']})"
            f"  ({door['messages']} x 5 KB, {door['concurrency']} at once, median of"
            f" {door['rounds']} rounds)"
        )
    print(f"API / SMTP: {ratio} in throughput, {cpu_ratio} in server CPU per message")
    print(f"API / SMTP server CPU, round by round: {', '.join(map(str, pairs))}")
    print(
        f"event append: {events['append_ms']} ms (PING {events['ping_ms']} ms,"
        f" {events['append_over_ping']}x)"
    )
    save_results("apps", results)
    return results


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        import uvloop  # as `relay run` runs (run.uvloop)

        profile = os.environ.get("BENCH_APPS_PROFILE")  # where the server's time goes
        if profile:
            import cProfile

            with cProfile.Profile() as profiler:
                uvloop.run(serve(Path(sys.argv[2])))
            profiler.dump_stats(profile)
        else:
            uvloop.run(serve(Path(sys.argv[2])))
    else:
        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        parser.add_argument("--messages", type=int, default=1000)
        parser.add_argument("--concurrency", type=int, default=20)
        parser.add_argument("--rounds", type=int, default=3)
        args = parser.parse_args()
        asyncio.run(main(args.messages, args.concurrency, args.rounds))
