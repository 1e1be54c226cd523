"""The two submission listeners (STARTTLS and implicit TLS) on aiosmtpd, inside our loop."""

from __future__ import annotations

import asyncio
import re
import ssl
import warnings
from email._header_value_parser import get_addr_spec, get_angle_addr
from email.errors import HeaderParseError
from typing import AnyStr, Protocol

import structlog
from aiosmtpd.smtp import SMTP, Envelope, syntax

from relay import replies
from relay.config import Listener, SubmissionSettings
from relay.errors import ConfigError
from relay.queue.model import RecipientDsn
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

_UNPRINTABLE = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")


class Admission(Protocol):
    """Open sessions in all and per client address: `ConnectionLimits` (this process) or
    `relay.node.limits.NodeConnectionLimits` (every process of the node)."""

    def admit(self, ip: str) -> str | None: ...

    def release(self, ip: str) -> None: ...


class DsnEnvelope(Envelope):
    """aiosmtpd's envelope with the DSN parameters of the transaction (RFC 3461)."""

    def __init__(self) -> None:
        super().__init__()
        self.dsn_ret: str | None = None
        self.dsn_envid: str | None = None
        self.dsn_rcpts: dict[str, RecipientDsn] = {}


def parse_path(arg: str, local_part_limit: int) -> tuple[str | None, str | None]:
    """(address, what follows it) of a MAIL/RCPT argument; (None, None) when unparsable;
    ("", "") for an empty one. aiosmtpd's rules (SMTP._getaddr), computed once, and a
    malformed path is a 553, not the IndexError that aiosmtpd lets escape."""
    if not arg:
        return "", ""
    try:
        parse = get_angle_addr if arg.lstrip().startswith("<") else get_addr_spec
        address, rest = parse(arg)
    except (HeaderParseError, IndexError):  # the email parser can run off the end ("<")
        return None, None
    addr: str = address.addr_spec
    if local_part_limit and len(addr.rpartition("@")[0]) > local_part_limit:
        return None, None
    return addr, rest


class SubmissionSMTP(SMTP):
    """aiosmtpd's SMTP with enhanced codes on every reply, a DATA timeout and a 421 on idle."""

    data_timeout: float = 600.0
    connections: Admission | None = None
    """Open sessions in all and per client address (shared by every listener)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        self._verbatim = False
        self._counted: str | None = None
        self._last_address: tuple[str, tuple[str | None, str | None]] | None = None
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's address parser, less its cost: it builds a class on every call (13% of
        the loop in a profile), and the DSN split parses the same argument just before."""
        if self._last_address is not None and self._last_address[0] == arg:
            return self._last_address[1]
        parsed = parse_path(arg, self.local_part_limit)
        self._last_address = (arg, parsed)
        return parsed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is None and self.connections is not None:  # not STARTTLS's switch
            peer = transport.get_extra_info("peername")
            ip = str(peer[0]) if isinstance(peer, tuple) else str(peer)
            refusal = self.connections.admit(ip)
            if refusal is not None:  # before aiosmtpd starts a session: no greeting, no task
                log.info("submission.connection_refused", peer=ip, reply=refusal)
                _write(transport, f"{refusal}\r\n")
                transport.close()
                return
            self._counted = ip
        super().connection_made(transport)

    async def push(self, status: AnyStr) -> None:
        text = status.decode("utf-8", "replace") if isinstance(status, bytes) else status
        # One line of text, whatever a client's command echoed into it (CR, NUL, bad UTF-8).
        text = _UNPRINTABLE.sub("?", text)
        verbatim = self._verbatim and text.startswith("250")  # EHLO keyword lines, not a 501
        if not (verbatim or text.startswith(("334 ", "354 ", f"220 {self.hostname} "))):
            text = replies.enhance(text)
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
        self._reset_timeout(self.data_timeout)
        await super().smtp_DATA(arg)

    # DSN (RFC 3461): our parameters leave the line before aiosmtpd sees it (it would
    # uppercase them and answer 555); they are kept on the envelope once the command succeeds.

    def _create_envelope(self) -> Envelope:
        return DsnEnvelope()

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str | None) -> None:
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
        await super().smtp_MAIL(arg)
        if isinstance(envelope, DsnEnvelope) and before is None and envelope.mail_from:
            envelope.dsn_ret, envelope.dsn_envid = ret, envid

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
        await super().smtp_RCPT(arg)
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
        super()._set_post_data_state()  # type: ignore[no-untyped-call]

    def eof_received(self) -> bool | None:
        if self.session is None:
            return False  # refused in connection_made: aiosmtpd never started; close
        return super().eof_received()

    def connection_lost(self, error: Exception | None) -> None:
        if self.session is None:
            return  # refused in connection_made: aiosmtpd never started
        if self._counted is not None and self.connections is not None:
            self.connections.release(self._counted)
            self._counted = None
        self.event_handler.end_transaction(self.session)
        super().connection_lost(error)

    def _timeout_cb(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            _write(transport, f"{replies.TIMEOUT}\r\n")
        super()._timeout_cb()  # type: ignore[no-untyped-call]


def _write(transport: asyncio.BaseTransport, line: str) -> None:
    """A reply written outside aiosmtpd's session. By duck type: uvloop's transports write
    like asyncio's but are not `asyncio.WriteTransport` subclasses."""
    write = getattr(transport, "write", None)
    if callable(write):
        write(line.encode())


def _protocol_class(
    settings: SubmissionSettings, connections: Admission | None
) -> type[SubmissionSMTP]:
    return type(
        "ConfiguredSubmissionSMTP",
        (SubmissionSMTP,),
        {
            "line_length_limit": settings.max_line_length,
            "data_timeout": settings.timeouts.data.seconds,
            "connections": connections
            if connections is not None
            else ConnectionLimits(settings.max_connections, settings.max_connections_per_ip),
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
    connections: Admission | None = None,
    reuse_port: bool = False,
) -> list[asyncio.Server]:
    """Listen on every listener's address. `connections`: the admission of new sessions
    (default: this process's own `ConnectionLimits`); `reuse_port`: bind with SO_REUSEPORT,
    so that the node's processes each listen on the same ports and the kernel spreads new
    connections over them."""
    loop = asyncio.get_running_loop()
    handler = SubmissionHandler(service, guard)
    protocol = _protocol_class(settings, connections)
    servers: list[asyncio.Server] = []
    for listener in listeners:
        implicit = listener.tls == "implicit"

        def factory(implicit: bool = implicit) -> SMTP:
            with warnings.catch_warnings():
                # On the implicit-TLS listener aiosmtpd warns, per connection, that AUTH is
                # allowed without TLS: it cannot see the socket's TLS (upstream #274). The
                # handler refuses AUTH on any transport without an ssl_object.
                warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring")
                return _make(implicit)

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
                ssl=tls if implicit else None,
                ssl_handshake_timeout=settings.timeouts.tls_handshake.seconds if implicit else None,
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
