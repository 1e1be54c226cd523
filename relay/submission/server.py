"""The two submission listeners (STARTTLS and implicit TLS) on aiosmtpd, inside our loop."""

from __future__ import annotations

import asyncio
import ssl
import warnings
from typing import AnyStr

import structlog
from aiosmtpd.smtp import SMTP

from relay import replies
from relay.config import Listener, SubmissionSettings
from relay.submission.handler import SubmissionHandler
from relay.submission.service import Submission

__all__ = ["start_listeners"]

log = structlog.get_logger("relay.submission")


class SubmissionSMTP(SMTP):
    """aiosmtpd's SMTP with enhanced codes on every reply, a DATA timeout and a 421 on idle."""

    data_timeout: float = 600.0

    def __init__(self, *args: object, **kwargs: object) -> None:
        self._verbatim = False
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    async def push(self, status: AnyStr) -> None:
        text = status.decode("utf-8", "replace") if isinstance(status, bytes) else status
        if not (self._verbatim or text.startswith(("334 ", "354 ", f"220 {self.hostname} "))):
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

    # aiosmtpd discards a transaction in one place, whatever ended it (RSET, EHLO, HELO, or
    # DATA failing or succeeding); a lost connection (QUIT, timeout, reset) ends it too.
    def _set_post_data_state(self) -> None:
        if self.session is not None:
            self.event_handler.end_transaction(self.session)
        super()._set_post_data_state()  # type: ignore[no-untyped-call]

    def connection_lost(self, error: Exception | None) -> None:
        if self.session is not None:
            self.event_handler.end_transaction(self.session)
        super().connection_lost(error)

    def _timeout_cb(self) -> None:
        transport = self.transport
        if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
            transport.write(f"{replies.TIMEOUT}\r\n".encode())
        super()._timeout_cb()  # type: ignore[no-untyped-call]


def _protocol_class(settings: SubmissionSettings) -> type[SubmissionSMTP]:
    return type(
        "ConfiguredSubmissionSMTP",
        (SubmissionSMTP,),
        {
            "line_length_limit": settings.max_line_length,
            "data_timeout": settings.timeouts.data.seconds,
        },
    )


async def start_listeners(
    *,
    listeners: list[Listener],
    settings: SubmissionSettings,
    service: Submission,
    tls: ssl.SSLContext,
    hostname: str,
) -> list[asyncio.Server]:
    loop = asyncio.get_running_loop()
    handler = SubmissionHandler(service)
    protocol = _protocol_class(settings)
    servers = []
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

        server = await loop.create_server(
            factory,
            host=listener.address.host,
            port=listener.address.port,
            ssl=tls if implicit else None,
        )
        log.info("submission.listening", address=str(listener.address), tls=listener.tls)
        servers.append(server)
    return servers
