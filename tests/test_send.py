"""`relay send` against a real aiosmtpd server on 127.0.0.1 with TLS (trustme) and AUTH."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email
import email.policy
import socket
import ssl
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal

import pytest
import trustme
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from relay.send import SendError, SendResult, build_test_message, send_message
from relay.tls import client_context

LOGIN, PASSWORD = "acme", "correct horse"
FROM = "sender@acme.test"


@dataclass
class Sink:
    received: list[tuple[str | None, list[str], bytes, Any]] = field(default_factory=list)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address.startswith("nobody@"):
            return "550 5.1.1 No such user"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        self.received.append(
            (envelope.mail_from, list(envelope.rcpt_tos), envelope.content, session.auth_data)
        )
        return "250 2.0.0 OK queued as Q123"


def authenticator(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    if (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == LOGIN.encode()
        and auth_data.password == PASSWORD.encode()
    ):
        return AuthResult(success=True, auth_data=LOGIN)
    return AuthResult(success=False, handled=False)  # handled=True leaves the client hanging


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture
def trusting(ca: trustme.CA, tmp_path: Path) -> ssl.SSLContext:
    cafile = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    return client_context(cafile=cafile)


@contextlib.asynccontextmanager
async def smtp_server(
    sink: Sink, tls: Literal["starttls", "implicit", "none"], context: ssl.SSLContext
) -> AsyncIterator[int]:
    def factory() -> SMTP:
        common: dict[str, Any] = {
            "hostname": "relay.test",
            "authenticator": authenticator,
            "auth_required": True,
            "enable_SMTPUTF8": True,
        }
        if tls == "starttls":
            return SMTP(sink, tls_context=context, require_starttls=True, **common)
        # Implicit TLS: aiosmtpd's auth_require_tls does not see it (LIBRARY-NOTES), and
        # turning it off warns, which filterwarnings=error would make a reset connection.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
            return SMTP(sink, auth_require_tls=False, **common)

    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        factory, "127.0.0.1", 0, ssl=context if tls == "implicit" else None
    )
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def send(
    port: int, tls: Literal["starttls", "implicit"], context: ssl.SSLContext, **kw: Any
) -> SendResult:
    args: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "tls": tls,
        "login": LOGIN,
        "password": PASSWORD,
        "mail_from": FROM,
        "recipients": ["rcpt@example.test"],
        "message": build_test_message(FROM, ["rcpt@example.test"], "hi", "hello\n", "relay.test"),
        "ssl_context": context,
        "timeout": 10,
    }
    args.update(kw)
    return await send_message(**args)


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
async def test_send_delivers_intact_message(
    tls: Literal["starttls", "implicit"], server_tls: ssl.SSLContext, trusting: ssl.SSLContext
) -> None:
    sink = Sink()
    recipients = ["one@example.test", "nobody@example.test", "two@example.test"]
    body = "Grüße aus dem Relay.\n.a line starting with a dot\n\nlast line\n"
    message = build_test_message(FROM, recipients, "Test ✓", body, "relay.test")
    async with smtp_server(sink, tls, server_tls) as port:
        result = await send(port, tls, trusting, recipients=recipients, message=message)

    assert result.accepted == ("one@example.test", "two@example.test")
    assert result.refused == {"nobody@example.test": (550, "5.1.1 No such user")}
    assert result.reply == (250, "2.0.0 OK queued as Q123")

    [(mail_from, rcpts, content, auth_data)] = sink.received
    assert (mail_from, rcpts, auth_data) == (FROM, ["one@example.test", "two@example.test"], LOGIN)
    assert content.rstrip(b"\r\n") == message.rstrip(b"\r\n")
    parsed = email.message_from_bytes(content, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    assert parsed["Subject"] == "Test ✓"
    assert parsed.get_content().replace("\r\n", "\n") == body


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
async def test_wrong_password_is_an_authentication_error(
    tls: Literal["starttls", "implicit"], server_tls: ssl.SSLContext, trusting: ssl.SSLContext
) -> None:
    sink = Sink()
    async with smtp_server(sink, tls, server_tls) as port:
        with pytest.raises(SendError) as info:
            await send(port, tls, trusting, password="wrong")
    message = str(info.value)
    assert message.startswith("authentication failed: 535")
    assert "wrong" not in message
    assert sink.received == []


async def test_closed_port_is_a_connection_error(trusting: ssl.SSLContext) -> None:
    port = free_port()
    with pytest.raises(SendError) as info:
        await send(port, "starttls", trusting)
    assert str(info.value) == f"cannot connect to 127.0.0.1:{port}: connection refused"


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
async def test_untrusted_certificate(
    tls: Literal["starttls", "implicit"], server_tls: ssl.SSLContext
) -> None:
    async with smtp_server(Sink(), tls, server_tls) as port:
        with pytest.raises(SendError, match=r"^TLS certificate not trusted: "):
            await send(port, tls, client_context())


async def test_starttls_is_required(server_tls: ssl.SSLContext, trusting: ssl.SSLContext) -> None:
    sink = Sink()
    async with smtp_server(sink, "none", server_tls) as port:
        with pytest.raises(SendError) as info:
            await send(port, "starttls", trusting)
    assert str(info.value) == f"127.0.0.1:{port} does not offer STARTTLS"
    assert sink.received == []


async def test_implicit_tls_to_a_starttls_port(
    server_tls: ssl.SSLContext, trusting: ssl.SSLContext
) -> None:
    async with smtp_server(Sink(), "starttls", server_tls) as port:
        with pytest.raises(SendError) as info:
            await send(port, "implicit", trusting)
    assert str(info.value).startswith(f"TLS handshake with 127.0.0.1:{port} failed: ")


async def test_address_with_line_break_is_refused_before_connecting(
    trusting: ssl.SSLContext,
) -> None:
    with pytest.raises(SendError, match="invalid address"):
        await send(free_port(), "starttls", trusting, recipients=["a@x.test\r\nDATA"])


async def test_all_recipients_refused(server_tls: ssl.SSLContext, trusting: ssl.SSLContext) -> None:
    sink = Sink()
    async with smtp_server(sink, "starttls", server_tls) as port:
        with pytest.raises(SendError) as info:
            await send(port, "starttls", trusting, recipients=["nobody@example.test"])
    assert str(info.value) == (
        "all recipients refused: nobody@example.test: 550 5.1.1 No such user"
    )
    assert sink.received == []


async def test_silent_server_times_out(trusting: ssl.SSLContext) -> None:
    done = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never greets; returns when the client gives up
        writer.close()
        await writer.wait_closed()
        done.set()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(SendError) as info:
            await send(port, "starttls", trusting, timeout=0.3)
        await asyncio.wait_for(done.wait(), 5)  # the server side closed its socket too
    assert str(info.value).startswith(
        f"timed out after 0.3s waiting for 127.0.0.1:{port} while connecting"
    )


def test_build_test_message_headers() -> None:
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    raw = build_test_message(FROM, ["a@x.test", "b@y.test"], "Hi", "body\n", "relay.test", now=when)
    assert raw.isascii() and b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["From"] == FROM
    assert parsed["To"] == "a@x.test, b@y.test"
    assert parsed["Subject"] == "Hi"
    assert parsed["Date"].datetime == when
    assert parsed["Message-ID"].endswith("@relay.test>")
