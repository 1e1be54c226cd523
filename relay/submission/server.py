"""The two submission listeners (STARTTLS and implicit TLS) on aiosmtpd, inside our loop."""

from __future__ import annotations

import asyncio
import functools
import re
import ssl
import warnings
from asyncio import sslproto
from collections.abc import Callable
from email._header_value_parser import get_addr_spec, get_angle_addr
from email.errors import HeaderParseError
from typing import Any, AnyStr, Protocol

import structlog
from aiosmtpd.smtp import SMTP, Envelope, TLSSetupException, syntax

from relay import metrics, replies
from relay.address import local_part
from relay.config import Listener, SubmissionSettings
from relay.errors import ConfigError
from relay.queue.model import RecipientDsn
from relay.spool import Incoming, InflightBudget, Spooled, SpoolError
from relay.submission.data_stream import END, DataDecoder, DataState
from relay.submission.dsn_params import (
    MAIL_PARAMS,
    RCPT_PARAMS,
    DsnSyntaxError,
    parse_mail,
    parse_rcpt,
    split_params,
)
from relay.submission.guard import AuthGuard, ConnectionLimits
from relay.submission.handler import SubmissionHandler
from relay.submission.service import Submission

__all__ = ["start_listeners"]

log = structlog.get_logger("relay.submission")

DATA_PIECE = 256 * 1024
"""Bytes of DATA read at most at once (the reader's limit while DATA streams in)."""
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")


class Admission(Protocol):
    """Open sessions in all and per client address: `ConnectionLimits` (this process) or
    `relay.node.limits.NodeConnectionLimits` (every process of the node)."""

    def admit(self, ip: str) -> str | None: ...

    def release(self, ip: str) -> None: ...


class DsnEnvelope(Envelope):
    """aiosmtpd's envelope with the DSN parameters of the transaction (RFC 3461) and, after
    DATA, where its body went (the spool) instead of `content`."""

    def __init__(self) -> None:
        super().__init__()
        self.dsn_ret: str | None = None
        self.dsn_envid: str | None = None
        self.dsn_rcpts: dict[str, RecipientDsn] = {}
        self.dsn_asked: RecipientDsn | None = None
        """NOTIFY/ORCPT of the RCPT being checked (the handler decides on NOTIFY=SUCCESS)."""
        self.spooled: Spooled | None = None


def parse_path(arg: str, local_part_limit: int) -> tuple[str | None, str | None]:
    """(address, what follows it) of a MAIL/RCPT argument; (None, None) when unparsable;
    ("", "") for an empty one. aiosmtpd's rules (SMTP._getaddr), computed once, and a
    malformed path is a 553, not the IndexError that aiosmtpd lets escape."""
    if not arg:
        return "", ""
    plain = _plain_path(arg)
    if plain is not None:
        addr, rest = plain
    else:
        try:
            parse = get_angle_addr if arg.lstrip().startswith("<") else get_addr_spec
            address, rest = parse(arg)
            addr = address.addr_spec
        # The email parser runs off the end ('<', '"') or trips on its own defects ('<a@[>').
        except (HeaderParseError, IndexError, AttributeError):
            return None, None
    if local_part_limit and len(local_part(addr)) > local_part_limit:
        return None, None
    return addr, rest


def _plain_path(arg: str) -> tuple[str, str] | None:
    """`parse_path`'s answer for the usual argument, `<dot-atom@host.name>` and maybe
    parameters, without the email parser (about 20 us a call, twice a message); None for
    anything else, which the parser then reads. The same answer as the parser's, including
    the white space it drops after the `>` (tests/test_parse_path.py)."""
    match = _PLAIN_PATH.match(arg)
    if match is None:
        return None
    rest = arg[match.end() :]
    if rest[:1] in (" ", "\t"):
        rest = rest.lstrip()  # the parser's folding white space: str.lstrip's
    if rest[:1] == "(":  # a comment: the parser's to read
        return None
    return match.group(1), rest


_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_PATH = re.compile(rf"<({_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>")


class SubmissionSMTP(SMTP):
    """aiosmtpd's SMTP with enhanced codes on every reply, a DATA timeout, a 421 on idle, a
    deadline to authenticate by, and a bounded STARTTLS handshake."""

    data_timeout: float = 600.0
    pre_auth_timeout: float = 60.0
    tls_handshake_timeout: float = 30.0
    connections: Admission | None = None
    """Open sessions in all and per client address (shared by every listener)."""
    draining: Callable[[], bool] | None = None
    """Whether the node is draining (`relay node drain`): new sessions and new transactions
    get 421 4.3.2 and are closed. A read of shared memory, no Redis."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._verbatim = False
        self._counted: str | None = None
        self._counting = ""
        """MAIL or RCPT while one runs: its 4xx/5xx replies are counted as refusals."""
        self._pre_auth: asyncio.TimerHandle | None = None
        self._last_address: tuple[str, tuple[str | None, str | None]] | None = None
        super().__init__(*args, **kwargs)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's address parser, less its cost: it builds a class on every call (13% of
        the loop in a profile), and the DSN split parses the same argument just before."""
        if self._last_address is not None and self._last_address[0] == arg:
            return self._last_address[1]
        parsed = parse_path(arg, self.local_part_limit)
        self._last_address = (arg, parsed)
        return parsed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is not None:  # STARTTLS's switch: the same session goes on
            super().connection_made(transport)
            return
        ip = _peer_ip(transport.get_extra_info("peername"))
        if self.draining is not None and self.draining():
            log.info("submission.connection_refused", peer=ip, reply=str(replies.NODE_DRAINING))
            _write(transport, f"{replies.NODE_DRAINING}\r\n")
            transport.close()
            return
        if self.connections is not None:
            refusal = self.connections.admit(ip)
            if refusal is not None:  # before aiosmtpd starts a session: no greeting, no task
                log.info("submission.connection_refused", peer=ip, reply=refusal)
                _write(transport, f"{refusal}\r\n")
                transport.close()
                return
            self._counted = ip
        # From connect, not from the last command: a client that never authenticates does
        # not keep its slot by sending a NOOP now and then.
        self._pre_auth = self.loop.call_later(self.pre_auth_timeout, self._pre_auth_expired)
        metrics.record("sessions", 1)
        super().connection_made(transport)

    def _pre_auth_expired(self) -> None:
        self._pre_auth = None
        if self.session is None or self.session.authenticated:
            return
        transport = self.transport or self._original_transport
        if transport is None or transport.is_closing():
            return
        log.info("submission.pre_auth_timeout", peer=_peer_ip(self.session.peer))
        _write(transport, f"{replies.PRE_AUTH_TIMEOUT}\r\n")
        transport.close()  # connection_lost follows, which ends the session

    async def smtp_STARTTLS(self, arg: str) -> None:
        """aiosmtpd's, on the loop's own TLS layer (`loop.start_tls`: uvloop's, in C, where
        aiosmtpd builds asyncio's pure-Python SSLProtocol), the handshake bounded by
        `tls_handshake_timeout`, a failed handshake logged as one line, not a traceback."""
        if arg or not self.tls_context:
            await super().smtp_STARTTLS(arg)  # its 501 / 454
            return
        await self.push("220 Ready to start TLS")
        plain = self.transport
        assert plain is not None and self.session is not None
        # RFC 3207 4.2: what the client sent after STARTTLS in clear is discarded; now,
        # since the first encrypted command may come with the end of the handshake.
        self._reader._buffer.clear()  # type: ignore[attr-defined]
        try:
            secure = await self.loop.start_tls(
                plain,  # type: ignore[arg-type]
                self,
                self.tls_context,
                server_side=True,
                ssl_handshake_timeout=self.tls_handshake_timeout,
            )
        except asyncio.CancelledError:
            raise
        except Exception as error:
            _log_handshake_failure(_peer_ip(self.session.peer), error, self.tls_handshake_timeout)
            # aiosmtpd closes the connection and ends the session on this exception.
            raise _HandshakeFailed() from error
        if secure is None:  # the connection went away during the handshake
            raise _HandshakeFailed()
        # What aiosmtpd's connection_made does after its own STARTTLS: a new session on the
        # secure transport (RFC 3207 4.2), the streams writing and reading through it.
        self._original_transport = plain
        self._tls_protocol = secure  # type: ignore[assignment]  # aiosmtpd tests it for truth
        self._reader._transport = secure  # type: ignore[attr-defined]
        self._writer._transport = secure  # type: ignore[attr-defined]
        self.transport = secure
        peer = self.session.peer
        self._set_rset_state()  # type: ignore[no-untyped-call]
        self.session = self._create_session()
        self.session.peer = peer
        self.session.ssl = {"ssl_object": secure.get_extra_info("ssl_object")}
        self._reset_timeout()

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, _HandshakeFailed):  # logged already; nothing is sent back
            return str(replies.INTERNAL_ERROR)
        return await super().handle_exception(error)

    async def push(self, status: AnyStr) -> None:
        text = status.decode("utf-8", "replace") if isinstance(status, bytes) else status
        # One line of text, whatever a client's command echoed into it (CR, NUL, bad UTF-8).
        text = _UNPRINTABLE.sub("?", text)
        verbatim = self._verbatim and text.startswith("250")  # EHLO keyword lines, not a 501
        if not (verbatim or text.startswith(("334 ", "354 ", f"220 {self.hostname} "))):
            text = replies.enhance(text)
        if self._counting and text[:1] in ("4", "5"):
            metrics.submission_outcome(self._counting, text)
        await super().push(text)

    async def smtp_EHLO(self, hostname: str) -> None:
        self._verbatim = True  # the EHLO keyword lines carry no status codes
        try:
            await super().smtp_EHLO(hostname)
        finally:
            self._verbatim = False

    async def smtp_HELO(self, hostname: str) -> None:
        self._verbatim = True
        try:
            await super().smtp_HELO(hostname)
        finally:
            self._verbatim = False

    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's DATA, streamed: the content goes to the spool as it arrives (never
        held whole), in pieces of up to the reader's limit, and is durable before the
        handler decides on it. Same replies as aiosmtpd for the same input."""
        self._reset_timeout(self.data_timeout)
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        envelope = self.envelope
        assert isinstance(envelope, DsnEnvelope) and self.session is not None
        if not envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        incoming = await self.event_handler.receive(self.session, 0)
        if isinstance(incoming, str):
            await self.push(incoming)
            return
        budget = self.event_handler.budget
        decoder = DataDecoder(
            size_limit=self.data_size_limit or 0, line_limit=self.line_length_limit
        )
        # Pieces of up to DATA_PIECE bytes: at aiosmtpd's limit (the longest line, 8 KB by
        # default), the reader hands over 8 KB at a time and pauses the socket at 16 KB,
        # thousands of times for a 20 MB message. Commands get their limit back after.
        line_limit = self._reader._limit  # type: ignore[attr-defined]
        self._reader._limit = max(line_limit, DATA_PIECE)  # type: ignore[attr-defined]
        # A refusal decided mid-stream (the disk): the rest is still read and dropped, as
        # aiosmtpd does for its own refusals, so that it is not taken for commands.
        failed: str | None = None
        try:
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            while not decoder.done:
                try:
                    piece = await self._read_data(decoder.wanted())
                except asyncio.IncompleteReadError:  # the client went away mid-DATA
                    return
                content = decoder.feed(piece)
                if content and failed is None:
                    try:
                        incoming.write(content)
                    except SpoolError as exc:
                        log.error("spool.write_failed", error=str(exc))
                        failed = str(replies.SPOOL_FULL)
                    else:
                        budget.take(len(content))
            status = failed or await self._end_data(decoder, incoming, envelope)
        except SpoolError as exc:  # making it durable failed: nothing was accepted
            log.error("spool.write_failed", error=str(exc))
            status = str(replies.SPOOL_FULL)
        finally:
            self._reader._limit = line_limit  # type: ignore[attr-defined]
            budget.give(incoming.size)
            if envelope.spooled is None:
                incoming.abort()
        self._set_post_data_state()
        metrics.submission_outcome("DATA", status)
        await self.push(status)

    async def _read_data(self, exactly: int) -> bytes:
        """The next piece of DATA, never past its end (see data_stream)."""
        if exactly:
            return await self._reader.readexactly(exactly)
        try:
            return await self._reader.readuntil(END)
        except asyncio.LimitOverrunError as exc:  # no end in the buffer's first `limit` bytes
            return await self._reader.read(exc.consumed)

    async def _end_data(
        self, decoder: DataDecoder, incoming: Incoming, envelope: DsnEnvelope
    ) -> str:
        if decoder.state is DataState.TOO_LONG:
            return str(replies.LINE_TOO_LONG)
        if decoder.state is DataState.TOO_MUCH:
            return str(replies.MESSAGE_TOO_BIG)
        if incoming.head_overflow:
            return replies.HEADER_TOO_BIG.format(limit=len(incoming.head))
        envelope.spooled = await incoming.commit()
        status: str = await self.event_handler.handle_DATA(self, self.session, envelope)
        return status

    # DSN (RFC 3461): our parameters leave the line before aiosmtpd sees it (it would
    # uppercase them and answer 555); they are kept on the envelope once the command succeeds.

    def _create_envelope(self) -> Envelope:
        return DsnEnvelope()

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str | None) -> None:
        if self.draining is not None and self.draining() and self.transport is not None:
            await self.push(str(replies.NODE_DRAINING))
            self.transport.close()  # connection_lost follows, which ends the session
            return
        split = await self._take_dsn_params(arg, "MAIL", "FROM:", MAIL_PARAMS)
        if split is None:
            return
        arg, params = split
        try:
            ret, envid = parse_mail(params)
        except DsnSyntaxError as exc:
            await self.push(exc.reply)
            return
        envelope = self.envelope
        before = envelope.mail_from if envelope is not None else None
        if isinstance(envelope, DsnEnvelope) and before is None:
            envelope.dsn_ret, envelope.dsn_envid = ret, envid  # the handler decides on RET
        self._counting = "MAIL"
        try:
            await super().smtp_MAIL(arg)
        finally:
            self._counting = ""
        if isinstance(envelope, DsnEnvelope) and before is None and not envelope.mail_from:
            envelope.dsn_ret = envelope.dsn_envid = None  # refused: no transaction

    @syntax("RCPT TO: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_RCPT(self, arg: str | None) -> None:
        split = await self._take_dsn_params(arg, "RCPT", "TO:", RCPT_PARAMS)
        if split is None:
            return
        arg, params = split
        try:
            wanted = parse_rcpt(params)
        except DsnSyntaxError as exc:
            await self.push(exc.reply)
            return
        envelope = self.envelope
        before = len(envelope.rcpt_tos) if envelope is not None else 0
        if isinstance(envelope, DsnEnvelope):
            envelope.dsn_asked = wanted
        self._counting = "RCPT"
        try:
            await super().smtp_RCPT(arg)
        finally:
            self._counting = ""
        if isinstance(envelope, DsnEnvelope):
            envelope.dsn_asked = None
        if isinstance(envelope, DsnEnvelope) and len(envelope.rcpt_tos) > before and params:
            envelope.dsn_rcpts[envelope.rcpt_tos[-1]] = wanted

    async def _take_dsn_params(
        self, arg: str | None, command: str, keyword: str, names: frozenset[str]
    ) -> tuple[str | None, dict[str, str]] | None:
        """(the line without our parameters, our parameters); None when a reply was sent.

        Anything this does not understand goes to aiosmtpd unchanged, for its own reply.
        """
        if await self.check_helo_needed() or await self.check_auth_needed(command):
            return None
        stripped = self._strip_command_keyword(keyword, arg) if arg else None
        if stripped is None or self.session is None or not self.session.extended_smtp:
            return arg, {}
        address, rest = self._getaddr(stripped)
        if not address or rest is None:
            return arg, {}
        try:
            params, others = split_params(rest, names)
        except DsnSyntaxError as exc:
            await self.push(exc.reply)
            return None
        head = stripped[: len(stripped) - len(rest)].rstrip()
        return " ".join([keyword + head, *others]), params

    # aiosmtpd discards a transaction in one place, whatever ended it (RSET, EHLO, HELO, or
    # DATA failing or succeeding); a lost connection (QUIT, timeout, reset) ends it too.
    def _set_post_data_state(self) -> None:
        if self.session is not None:
            self.event_handler.end_transaction(self.session)
        super()._set_post_data_state()  # type: ignore[no-untyped-call]  # aiosmtpd leaves it unannotated

    def eof_received(self) -> bool | None:
        if self.session is None:
            return False  # refused in connection_made: aiosmtpd never started; close
        return super().eof_received()

    def connection_lost(self, error: Exception | None) -> None:
        if self.session is None:
            return  # refused in connection_made: aiosmtpd never started
        if self._pre_auth is not None:
            self._pre_auth.cancel()
            self._pre_auth = None
        if self._counted is not None and self.connections is not None:
            self.connections.release(self._counted)
            self._counted = None
        self.event_handler.end_transaction(self.session)
        metrics.record("sessions", -1)
        super().connection_lost(error)

    def _timeout_cb(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            _write(transport, f"{replies.TIMEOUT}\r\n")
        super()._timeout_cb()  # type: ignore[no-untyped-call]  # aiosmtpd leaves it unannotated


class _HandshakeFailed(TLSSetupException):
    """A STARTTLS handshake that failed or timed out, and was logged as such."""


def _peer_ip(peer: object) -> str:
    return str(peer[0]) if isinstance(peer, tuple) else str(peer)


def _log_handshake_failure(peer: str, error: BaseException | None, timeout: float) -> None:
    """One line for a TLS handshake that did not complete (scanners, clients that do not
    trust the certificate, clients that stall): never a traceback."""
    if isinstance(error, ConnectionAbortedError):  # asyncio's handshake timeout
        reason = f"timeout after {timeout:g}s"
    elif isinstance(error, ssl.SSLError):
        reason = error.reason or str(error)
    elif error is None or (isinstance(error, ConnectionError) and not str(error)):
        reason = "connection closed"
    else:
        reason = str(error) or type(error).__name__
    log.info("tls.handshake_failed", peer=peer, error=reason)


class _ImplicitTls(sslproto.SSLProtocol):
    """The TLS layer of an implicit-TLS connection, as `loop.create_server(ssl=...)` builds
    it, made here so that a handshake that fails or times out is logged (asyncio drops it
    silently unless the loop runs in debug mode, and so does uvloop's). The SMTP session
    starts once it is done.

    Not `loop.start_tls` from `connection_made`, as STARTTLS now is: uvloop starts reading
    right after `connection_made` returns and runs the new task's first step only on the
    next turn, so the ClientHello can reach the SMTP protocol first and the handshake hangs
    (tried: 8 of 20 connections). With STARTTLS the client waits for our 220, and
    `start_tls` takes the socket in the same step as the 220 is written."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, app: SMTP, tls: ssl.SSLContext, timeout: float
    ) -> None:
        waiter: asyncio.Future[None] = loop.create_future()
        super().__init__(
            loop,
            app,
            tls,
            waiter,
            server_side=True,
            ssl_handshake_timeout=timeout,  # type: ignore[arg-type]  # typeshed says int; asyncio takes any number
        )
        self._peer = "?"
        waiter.add_done_callback(functools.partial(self._handshake_done, timeout))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._peer = _peer_ip(transport.get_extra_info("peername"))
        super().connection_made(transport)

    def _handshake_done(self, timeout: float, waiter: asyncio.Future[None]) -> None:
        if waiter.cancelled():
            return
        error = waiter.exception()
        if error is not None:
            _log_handshake_failure(self._peer, error, timeout)


def _write(transport: asyncio.BaseTransport, line: str) -> None:
    """A reply written outside aiosmtpd's session. By duck type: uvloop's transports write
    like asyncio's but are not `asyncio.WriteTransport` subclasses."""
    write = getattr(transport, "write", None)
    if callable(write):
        write(line.encode())


def _protocol_class(
    settings: SubmissionSettings,
    connections: Admission | None,
    draining: Callable[[], bool] | None = None,
) -> type[SubmissionSMTP]:
    return type(
        "ConfiguredSubmissionSMTP",
        (SubmissionSMTP,),
        {
            "line_length_limit": settings.max_line_length,
            "data_timeout": settings.timeouts.data.seconds,
            "pre_auth_timeout": settings.timeouts.pre_auth.seconds,
            "tls_handshake_timeout": settings.timeouts.tls_handshake.seconds,
            "connections": connections
            if connections is not None
            else ConnectionLimits(settings.max_connections, settings.max_connections_per_ip),
            "draining": staticmethod(draining) if draining is not None else None,
        },
    )


async def start_listeners(
    *,
    listeners: list[Listener],
    settings: SubmissionSettings,
    service: Submission,
    tls: ssl.SSLContext,
    hostname: str,
    guard: AuthGuard | None = None,
    budget: InflightBudget | None = None,
    connections: Admission | None = None,
    reuse_port: bool = False,
    draining: Callable[[], bool] | None = None,
) -> list[asyncio.Server]:
    """Listen on every listener's address. `connections`: the admission of new sessions
    (default: this process's own `ConnectionLimits`); `reuse_port`: bind with SO_REUSEPORT,
    so that the node's processes each listen on the same ports and the kernel spreads new
    connections over them. `draining`: whether the node is draining (see
    `SubmissionSMTP.draining`)."""
    loop = asyncio.get_running_loop()
    handler = SubmissionHandler(service, guard, budget)
    protocol = _protocol_class(settings, connections, draining)
    servers: list[asyncio.Server] = []
    for listener in listeners:
        implicit = listener.tls == "implicit"

        def factory(implicit: bool = implicit) -> asyncio.BaseProtocol:
            with warnings.catch_warnings():
                # On the implicit-TLS listener aiosmtpd warns, per connection, that AUTH is
                # allowed without TLS: it cannot see the socket's TLS (upstream #274). The
                # handler refuses AUTH on any transport without an ssl_object.
                warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring")
                smtp = _make(implicit)
            if not implicit:
                return smtp
            return _ImplicitTls(loop, smtp, tls, settings.timeouts.tls_handshake.seconds)

        def _make(implicit: bool) -> SMTP:
            return protocol(
                handler,
                hostname=hostname,
                ident="ESMTP",
                loop=loop,
                data_size_limit=settings.max_message_size,
                enable_SMTPUTF8=True,
                decode_data=False,
                tls_context=None if implicit else tls,
                require_starttls=not implicit,
                # Implicit TLS: aiosmtpd cannot see it (upstream #274); the handler checks.
                auth_require_tls=not implicit,
                auth_required=True,
                timeout=settings.timeouts.command.seconds,
            )

        try:
            server = await loop.create_server(
                factory,
                host=listener.address.host,
                port=listener.address.port,
                reuse_port=reuse_port or None,
            )
        except OSError as exc:
            for server in servers:
                server.close()
            raise ConfigError(
                f"submission.listeners: cannot listen on {listener.address}: {exc.strerror or exc}"
            ) from None
        log.info("submission.listening", address=str(listener.address), tls=listener.tls)
        servers.append(server)
    return servers
