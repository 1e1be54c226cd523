"""The client behind `relay send`: submit one message with AUTH over TLS to our own relay."""

from __future__ import annotations

import datetime as dt
import email.policy
import email.utils
import os
import socket
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Literal

import aiosmtplib

from relay.errors import RelayError

__all__ = ["SendError", "SendResult", "build_test_message", "send_message"]


class SendError(RelayError):
    """Submission failed; the message is one line fit to show to the operator."""


@dataclass(frozen=True)
class SendResult:
    accepted: tuple[str, ...]
    refused: Mapping[str, tuple[int, str]] = field(default_factory=dict)
    """Recipients the server refused while accepting others: rcpt → (code, text)."""
    reply: tuple[int, str] = (250, "")
    """The server's reply to the end of DATA (often carries its queue id)."""


async def send_message(
    *,
    host: str,
    port: int,
    tls: Literal["starttls", "implicit"],
    login: str,
    password: str,
    mail_from: str,
    recipients: list[str],
    message: bytes,
    ssl_context: ssl.SSLContext,
    timeout: float = 30,  # noqa: ASYNC109 - aiosmtplib's per-command timeout, not a deadline
) -> SendResult:
    """Connect, require TLS, authenticate, send; every failure becomes a SendError."""
    if not recipients:
        raise SendError("no recipients")
    for address in (mail_from, *recipients):
        _check_address(address)
    _check_text("login", login)
    where = _where(host, port)
    client = aiosmtplib.SMTP(
        hostname=host,
        port=port,
        use_tls=tls == "implicit",
        start_tls=False,  # done below, so that a server without STARTTLS gets a clear error
        tls_context=ssl_context,
        timeout=timeout,
    )
    phase = "connect"
    try:
        await client.connect()
        if tls == "starttls":
            phase = "starttls"
            await client.ehlo()
            if not client.supports_extension("starttls"):
                raise SendError(f"{where} does not offer STARTTLS")
            await client.starttls()
        phase = "auth"
        await client.login(login, password)
        phase = "send"
        result = await _transaction(client, mail_from, recipients, message)
    except SendError:
        raise
    except (aiosmtplib.SMTPException, OSError, ValueError) as exc:
        raise SendError(_describe(exc, phase, where, tls, timeout)) from exc
    finally:
        await _quit(client)
    return result


def _check_address(address: str) -> None:
    # aiosmtplib would quietly reparse such an address; refuse it instead.
    if any(ch.isspace() or ord(ch) < 0x20 or ch in "<>" for ch in address):
        raise SendError(f"invalid address: {address!r}")
    _check_text("address", address)


def _check_text(what: str, value: str) -> None:
    """Arguments that were not UTF-8 arrive with surrogates, which no encoder takes."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise SendError(f"the {what} is not UTF-8 text: {value!r}") from None


async def _transaction(
    client: aiosmtplib.SMTP, mail_from: str, recipients: Sequence[str], message: bytes
) -> SendResult:
    # MAIL/RCPT/DATA by hand rather than sendmail(): it keeps the code of the final reply.
    utf8 = not all(address.isascii() for address in (mail_from, *recipients))
    options = ["SMTPUTF8"] if utf8 else []
    encoding = "utf-8" if utf8 else "ascii"
    await client.mail(mail_from, options=options, encoding=encoding)
    accepted: list[str] = []
    refused: dict[str, tuple[int, str]] = {}
    for rcpt in recipients:
        try:
            await client.rcpt(rcpt, encoding=encoding)
        except aiosmtplib.SMTPRecipientRefused as exc:
            refused[rcpt] = (exc.code, exc.message)
        else:
            accepted.append(rcpt)
    if not accepted:
        await client.rset()
        details = "; ".join(f"{rcpt}: {code} {text}" for rcpt, (code, text) in refused.items())
        raise SendError(f"all recipients refused: {_one_line(details)}")
    reply = await client.data(message)
    return SendResult(tuple(accepted), refused, (reply.code, reply.message))


async def _quit(client: aiosmtplib.SMTP) -> None:
    if not client.is_connected:
        return
    try:
        await client.quit()
    except (aiosmtplib.SMTPException, OSError):
        client.close()


_PHASES = {
    "connect": "while connecting",
    "starttls": "during STARTTLS",
    "auth": "during AUTH",
    "send": "while sending",
}


def _describe(
    exc: BaseException,
    phase: str,
    where: str,
    tls: Literal["starttls", "implicit"],
    timeout: float,
) -> str:
    """One line for the operator: what went wrong, in their words, with the server's reply."""
    cause = _root_cause(exc)
    if isinstance(cause, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted: {cause.verify_message or cause.reason} ({where})"
    if isinstance(cause, ssl.SSLError):
        hint = " (is it a STARTTLS port?)" if cause.reason == "WRONG_VERSION_NUMBER" else ""
        return f"TLS handshake with {where} failed: {_ssl_reason(cause)}{hint}"
    if isinstance(exc, aiosmtplib.SMTPTimeoutError) or isinstance(cause, TimeoutError):
        hint = " (is it an implicit-TLS port?)" if phase == "connect" and tls == "starttls" else ""
        return f"timed out after {timeout:g}s waiting for {where} {_PHASES[phase]}{hint}"
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return f"authentication failed: {exc.code} {_one_line(exc.message)}"
    if isinstance(exc, aiosmtplib.SMTPSenderRefused):
        return f"sender {exc.sender} refused: {exc.code} {_one_line(exc.message)}"
    if isinstance(exc, aiosmtplib.SMTPDataError):
        return f"message refused: {exc.code} {_one_line(exc.message)}"
    if isinstance(exc, aiosmtplib.SMTPConnectResponseError):
        return f"{where} refused the connection: {exc.code} {_one_line(exc.message)}"
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return f"{where} replied {exc.code} {_one_line(exc.message)} {_PHASES[phase]}"
    if isinstance(exc, aiosmtplib.SMTPConnectError) or (
        phase == "connect" and isinstance(cause, OSError)
    ):
        return f"cannot connect to {where}: {_os_reason(cause)}"
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
        return f"{where} closed the connection {_PHASES[phase]}"
    if isinstance(exc, aiosmtplib.SMTPException):
        if phase == "auth":
            return f"authentication failed: {_one_line(exc.message)}"
        return f"{where}: {_one_line(exc.message)} {_PHASES[phase]}"
    if isinstance(exc, ValueError):  # aiosmtplib rejects unsafe addresses before sending
        return f"invalid address: {_one_line(str(exc))}"
    return f"{where}: {_os_reason(cause)} {_PHASES[phase]}"


def _root_cause(exc: BaseException) -> BaseException:
    seen: set[int] = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ssl.SSLError):
            return exc
        nxt = exc.__cause__ or exc.__context__
        if nxt is None:
            break
        exc = nxt
    return exc


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host: {exc.strerror}"
    if isinstance(exc, OSError) and exc.errno is not None and exc.errno > 0:
        return os.strerror(exc.errno).lower()  # asyncio's strerror is "Connect call failed ..."
    if isinstance(exc, OSError) and exc.strerror:
        return _one_line(exc.strerror)
    if isinstance(exc, aiosmtplib.SMTPException):
        return _one_line(exc.message)
    return _one_line(str(exc)) or type(exc).__name__


def _ssl_reason(exc: ssl.SSLError) -> str:
    return (exc.reason or str(exc)).lower().replace("_", " ")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def build_test_message(
    mail_from: str,
    recipients: Sequence[str],
    subject: str,
    body: str,
    hostname: str,
    *,
    now: dt.datetime | None = None,
) -> bytes:
    """A small RFC 5322 message with CRLF line ends, ready for DATA. A CR or LF in a header
    value would start a header of its own (`--subject $'hi\\r\\nBcc: x'`): refused."""
    for address in (mail_from, *recipients):
        _check_address(address)
    _check_text("subject", subject)
    _check_text("body", body)
    if "\r" in subject or "\n" in subject:
        raise SendError("the subject must be one line: it contains a line break (CR or LF)")
    if any((ord(ch) < 0x20 and ch != "\t") or ord(ch) == 0x7F for ch in subject):
        raise SendError(f"the subject has control characters: {subject!r}")
    message = EmailMessage(policy=email.policy.SMTP)
    message["Date"] = email.utils.format_datetime(now or dt.datetime.now(dt.UTC))
    message["Message-ID"] = email.utils.make_msgid(domain=hostname)
    message["From"] = mail_from
    message["To"] = ", ".join(recipients)
    message["Subject"] = subject
    # Quoted-printable for non-ASCII text: a 7-bit body needs no 8BITMIME along the way.
    message.set_content(body, cte=None if body.isascii() else "quoted-printable")
    return message.as_bytes()
