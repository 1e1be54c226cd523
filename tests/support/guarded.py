"""A submission stack as `relay run` builds it (AUTH guard, connection limits), over real TLS
sockets and a real Redis, with whatever submission settings a test needs; and raw clients.

Raw clients matter here: aiosmtplib refuses to send malformed commands, and hostile-input
tests must send exactly the bytes an attacker would.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass

import redis.asyncio as aioredis

from quota import QuotaStore
from relay.accounts import AccountStore
from relay.app import hashing_queue
from relay.clock import Clock
from relay.config import HostPort, Listener, SubmissionSettings
from relay.queue import QueueStore
from relay.spool import InflightBudget
from relay.submission.guard import AuthGuard, AuthPolicy
from relay.submission.server import start_listeners
from relay.submission.service import SubmissionService
from relay.tls import server_context
from tests.conftest import free_port
from tests.support.spool import temp_spool

REPLY_LINE = re.compile(rb"^([2-5]\d\d)([ -])(.*)$")


@dataclass
class Guarded:
    starttls_port: int
    implicit_port: int
    queue: QueueStore
    client_tls: ssl.SSLContext
    servers: list[asyncio.Server]


@contextlib.asynccontextmanager
async def guarded_stack(
    redis: aioredis.Redis,
    clock: Clock,
    server_cert,
    ca,
    *,
    policy: AuthPolicy | None = None,
    budget: InflightBudget | None = None,
    min_free: int = 0,
    host: str = "127.0.0.1",
    **settings: object,
) -> AsyncIterator[Guarded]:
    listeners = [
        Listener(address=HostPort(host=host, port=free_port(host)), tls="starttls"),
        Listener(address=HostPort(host=host, port=free_port(host)), tls="implicit"),
    ]
    submission = SubmissionSettings(listeners=listeners, **settings)  # type: ignore[arg-type]
    queue = QueueStore(redis, clock, temp_spool())
    hashing = hashing_queue(submission.auth_guard)
    service = SubmissionService(
        accounts=AccountStore(redis, clock, hashing=hashing),
        queue=queue,
        quota=QuotaStore(redis, default_per_minute=1000, per_recipient=100),
        settings=submission,
        hostname="relay.test",
        clock=clock,
        store_timeout=2.0,
        min_free=min_free,
    )
    policy = policy or AuthPolicy.from_settings(submission.auth_guard)
    servers = await start_listeners(
        listeners=listeners,
        settings=submission,
        service=service,
        tls=server_context(*server_cert),
        hostname="relay.test",
        guard=AuthGuard(redis, policy, clock),
        budget=budget,
    )
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)
    try:
        yield Guarded(
            listeners[0].address.port, listeners[1].address.port, queue, client_tls, servers
        )
    finally:
        for server in servers:
            server.close()
        for server in servers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 5)
        hashing.close()


class RawClient:
    """Bytes in, reply lines out; `source` picks the client address (any 127.0.0.0/8)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(
        cls, port: int, *, tls: ssl.SSLContext | None = None, source: str = "127.0.0.1"
    ) -> RawClient:
        """`source` ::1 connects to ::1 (a server listening there)."""
        host = "::1" if ":" in source else "127.0.0.1"
        reader, writer = await asyncio.open_connection(
            host,
            port,
            ssl=tls,
            server_hostname="127.0.0.1" if tls else None,
            local_addr=(source, 0),
            limit=2**20,
        )
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def reply(self, timeout: float = 10.0) -> tuple[int, str]:  # noqa: ASYNC109
        """One whole (possibly multiline) reply: (code, text of its last line)."""
        async with asyncio.timeout(timeout):
            while True:
                line = await self.reader.readline()
                if not line:
                    raise ConnectionError("closed by the server")
                match = REPLY_LINE.match(line.rstrip(b"\r\n"))
                if match is None:
                    raise AssertionError(f"not an SMTP reply line: {line!r}")
                if match.group(2) == b" ":
                    return int(match.group(1)), match.group(3).decode("utf-8", "replace")

    async def command(self, line: bytes, timeout: float = 10.0) -> tuple[int, str]:  # noqa: ASYNC109
        await self.send(line + b"\r\n")
        return await self.reply(timeout)

    async def starttls(self, context: ssl.SSLContext) -> None:
        assert (await self.command(b"STARTTLS"))[0] == 220
        await self.writer.start_tls(context, server_hostname="127.0.0.1")

    async def login(self, login: str, password: str) -> tuple[int, str]:
        blob = base64.b64encode(f"\0{login}\0{password}".encode())
        return await self.command(b"AUTH PLAIN " + blob)

    async def closed(self, timeout: float = 10.0) -> bytes:  # noqa: ASYNC109
        """Everything the server still sends until it closes the connection."""
        async with asyncio.timeout(timeout):
            return await self.reader.read()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
            await asyncio.wait_for(self.writer.wait_closed(), 2)


async def attempt(stack: Guarded, login: str, password: str, source: str) -> tuple[int, str]:
    """One AUTH PLAIN over implicit TLS from `source`: its reply."""
    client = await RawClient.connect(stack.implicit_port, tls=stack.client_tls, source=source)
    try:
        assert (await client.reply())[0] == 220
        await client.command(b"EHLO client.test")
        return await client.login(login, password)
    finally:
        await client.close()
