"""The catch-all sink: an SMTP server that keeps every message it receives.

`relay sink` runs it for the dev start (each message lands as an `.eml` file); tests run it
as the remote MX, with policy hooks that refuse a recipient or a connecting IP.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import os
import secrets
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import structlog
from aiosmtpd.smtp import SMTP, Envelope, Session

from relay.address import is_null_sender
from relay.config import SinkSettings

__all__ = ["Received", "Sink", "serve_sink", "start_sink"]

log = structlog.get_logger()

MaybeReply: TypeAlias = str | Awaitable[str | None] | None
ConnectPolicy: TypeAlias = Callable[[str], MaybeReply]
"""peer IP → a refusal sent instead of the greeting (e.g. "554 5.7.1 blocked"), or None."""
RcptPolicy: TypeAlias = Callable[[str, str], MaybeReply]
"""(peer IP, recipient) → a refusal (e.g. "451 4.7.1 try later"), or None to accept."""


@dataclass(frozen=True)
class Received:
    peer: str
    helo: str | None
    mail_from: str
    """"" for the null sender."""
    rcpt_tos: tuple[str, ...]
    data: bytes
    tls: bool
    mail_params: tuple[str, ...] = ()
    """DSN parameters of MAIL (RET, ENVID) as sent, when the sink offers DSN."""
    rcpt_params: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """(recipient, its NOTIFY/ORCPT as sent) for the recipients that gave any."""


class Sink:
    """Accepts mail (as far as the policy hooks allow) and keeps it in memory and/or on disk."""

    def __init__(
        self,
        *,
        directory: Path | None = None,
        tls_context: ssl.SSLContext | None = None,
        hostname: str = "sink.localhost",
        keep: bool = True,
        max_size: int = 100_000_000,
        smtputf8: bool = True,
        reply_for_connect: ConnectPolicy | None = None,
        reply_for_rcpt: RcptPolicy | None = None,
        dsn: bool = False,
    ) -> None:
        self.directory = directory
        self.tls_context = tls_context
        self.hostname = hostname
        self.keep = keep
        """Keep messages in `messages`; off for the long-running `relay sink`."""
        self.max_size = max_size
        self.smtputf8 = smtputf8
        self.reply_for_connect = reply_for_connect
        self.reply_for_rcpt = reply_for_rcpt
        self.dsn = dsn
        """Advertise DSN (RFC 3461) and keep the parameters each message came with."""
        self.messages: list[Received] = []
        self.count = 0
        self._arrived = asyncio.Event()
        self._sessions: set[_SinkSMTP] = set()
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)

    async def wait_for(self, count: int = 1, timeout: float = 5.0) -> list[Received]:  # noqa: ASYNC109
        """Wait until `count` messages have arrived in total; tests must never wait unbounded."""
        async with asyncio.timeout(timeout):
            while self.count < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.messages

    @contextlib.asynccontextmanager
    async def serving(
        self, host: str = "127.0.0.1", port: int = 0
    ) -> AsyncIterator[asyncio.Server]:
        """Listen while inside; on exit stop listening and drop open connections."""
        server = await start_sink(self, host, port)
        try:
            yield server
        finally:
            server.close()
            self.close_connections()
            await server.wait_closed()

    def close_connections(self) -> None:
        for session in list(self._sessions):
            if isinstance(session.transport, asyncio.WriteTransport):
                session.transport.abort()

    def protocol(self) -> SMTP:
        return _SinkSMTP(
            self,
            hostname=self.hostname,
            ident="relay sink",
            tls_context=self.tls_context,
            require_starttls=False,
            enable_SMTPUTF8=self.smtputf8,
            decode_data=False,
            data_size_limit=self.max_size,
            loop=asyncio.get_running_loop(),
        )

    # aiosmtpd handler hooks

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        if self.dsn:
            responses.insert(-1, "250-DSN")
        return responses

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.reply_for_rcpt is not None:
            refusal = await _resolve(self.reply_for_rcpt(_peer_ip(session), address))
            if refusal is not None:
                return refusal
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        mail_from = envelope.mail_from or ""
        received = Received(
            peer=_peer_ip(session),
            helo=session.host_name,
            mail_from="" if is_null_sender(mail_from) else mail_from,
            rcpt_tos=tuple(envelope.rcpt_tos),
            data=envelope.original_content or b"",
            tls=session.ssl is not None,
        )
        if isinstance(server, _SinkSMTP) and self.dsn:
            received = dataclasses.replace(
                received,
                mail_params=tuple(server.dsn_mail),
                rcpt_params=tuple((r, tuple(p)) for r, p in server.dsn_rcpt.items()),
            )
        queue_id = secrets.token_hex(6)
        if self.directory is not None:
            try:
                await asyncio.to_thread(self._write, received, queue_id)
            except OSError as exc:
                log.error("sink.write_failed", error=str(exc), dir=str(self.directory))
                return "451 4.3.0 Cannot store the message"
        self.count += 1
        if self.keep:
            self.messages.append(received)
        self._arrived.set()
        log.info(
            "sink.received",
            queue_id=queue_id,
            peer=received.peer,
            mail_from=received.mail_from,
            rcpt_tos=list(received.rcpt_tos),
            size=len(received.data),
            tls=received.tls,
        )
        return f"250 2.0.0 OK queued as {queue_id}"

    def _write(self, received: Received, queue_id: str) -> None:
        assert self.directory is not None
        name = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{queue_id}.eml"
        trace = f"Return-Path: <{received.mail_from}>\r\n" + "".join(
            f"X-Original-To: {rcpt}\r\n" for rcpt in received.rcpt_tos
        )
        temp = self.directory / f".{name}.tmp"
        with open(temp, "wb") as file:
            file.write(trace.encode() + received.data)
        os.replace(temp, self.directory / name)  # readers never see half a message


_DSN_PARAMS = frozenset({"RET", "ENVID", "NOTIFY", "ORCPT"})


class _SinkSMTP(SMTP):
    def __init__(self, sink: Sink, **kwargs: Any) -> None:
        super().__init__(sink, **kwargs)
        self.sink = sink
        self.dsn_mail: list[str] = []
        self.dsn_rcpt: dict[str, list[str]] = {}

    async def smtp_MAIL(self, arg: str) -> None:
        if self.sink.dsn and arg:
            arg, self.dsn_mail = _take_dsn(arg)
            self.dsn_rcpt = {}
        await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg: str) -> None:
        if self.sink.dsn and arg:
            arg, params = _take_dsn(arg)
            if params:
                self.dsn_rcpt[arg.partition(":")[2].strip().split()[0].strip("<>")] = params
        await super().smtp_RCPT(arg)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.sink._sessions.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        self.sink._sessions.discard(self)
        super().connection_lost(error)

    async def _handle_client(self) -> None:
        # The greeting stage has no handler hook; a refusal replaces the 220 (RFC 5321 3.1).
        if self.sink.reply_for_connect is not None and self.session is not None:
            refusal = await _resolve(self.sink.reply_for_connect(_peer_ip(self.session)))
            if refusal is not None:
                await self.push(refusal)
                if self.transport is not None:
                    self.transport.close()
                return
        await super()._handle_client()


async def start_sink(sink: Sink, host: str = "127.0.0.1", port: int = 0) -> asyncio.Server:
    """Listen on host:port (0: a free port, see `server.sockets`)."""
    return await asyncio.get_running_loop().create_server(sink.protocol, host, port)


async def serve_sink(settings: SinkSettings, *, tls_context: ssl.SSLContext | None = None) -> None:
    """Run the sink of `relay sink` until cancelled, storing each message in `settings.dir`."""
    sink = Sink(directory=settings.dir, tls_context=tls_context, keep=False)
    async with sink.serving(settings.address.host, settings.address.port) as server:
        log.info("sink.listening", address=str(settings.address), dir=str(settings.dir))
        await server.serve_forever()


async def _resolve(reply: MaybeReply) -> str | None:
    if inspect.isawaitable(reply):
        return await reply
    return reply


def _take_dsn(arg: str) -> tuple[str, list[str]]:
    """(the command argument without its DSN parameters, those parameters as sent)."""
    words = arg.split(" ")
    ours = [w for w in words if w.partition("=")[0].upper() in _DSN_PARAMS]
    return " ".join(w for w in words if w not in ours), ours


def _peer_ip(session: Session) -> str:
    peer: Any = session.peer
    return str(peer[0]) if isinstance(peer, tuple) else str(peer)
