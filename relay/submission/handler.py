"""The aiosmtpd handler: parse, call the submission service, map the result to a reply."""

from __future__ import annotations

import asyncio
import binascii
from base64 import b64decode

import structlog
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

from relay import replies
from relay.errors import StoreUnavailable
from relay.submission.service import Submission, Submitted

__all__ = ["SubmissionHandler"]

log = structlog.get_logger("relay.submission")


def _uses_tls(server: SMTP) -> bool:
    transport = server.transport
    return transport is not None and transport.get_extra_info("ssl_object") is not None


def _peer_ip(session: Session) -> str:
    peer = session.peer
    return str(peer[0]) if isinstance(peer, tuple) else str(peer)


class SubmissionHandler:
    def __init__(self, service: Submission) -> None:
        self._service = service
        self._open: dict[Session, tuple[str, str]] = {}
        """Session → (account, quota transaction) between MAIL and the end of the transaction."""
        self._releasing: set[asyncio.Task[None]] = set()

    def end_transaction(self, session: Session) -> None:
        """The transaction ended without DATA succeeding (RSET, EHLO, failed DATA, QUIT,
        disconnect, timeout): give its reserved quota back. Called from sync server code."""
        opened = self._open.pop(session, None)
        if opened is None:
            return
        task = asyncio.get_running_loop().create_task(self._service.release(*opened))
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    # --- AUTH (async, so the slow password check never blocks the loop) ---

    async def auth_PLAIN(self, server: SMTP, args: list[str]) -> AuthResult:
        blob: object
        if len(args) == 1:
            blob = await server.challenge_auth("")
        else:
            blob = _b64(args[1])
            if blob is None:
                await server.push("501 5.5.2 Cannot decode base64")
                return AuthResult(success=False, handled=True)
        if not isinstance(blob, bytes):
            return AuthResult(success=False, handled=True)
        parts = blob.split(b"\x00")
        if len(parts) != 3:
            await server.push("501 5.5.2 Cannot split AUTH PLAIN value")
            return AuthResult(success=False, handled=True)
        return await self._check(server, parts[1], parts[2])

    async def auth_LOGIN(self, server: SMTP, args: list[str]) -> AuthResult:
        if len(args) == 1:
            login = await server.challenge_auth(server.AuthLoginUsernameChallenge)
            if not isinstance(login, bytes):
                return AuthResult(success=False, handled=True)
        else:
            decoded = _b64(args[1])
            if decoded is None:
                await server.push("501 5.5.2 Cannot decode base64")
                return AuthResult(success=False, handled=True)
            login = decoded
        password = await server.challenge_auth(server.AuthLoginPasswordChallenge)
        if not isinstance(password, bytes):
            return AuthResult(success=False, handled=True)
        return await self._check(server, login, password)

    async def _check(self, server: SMTP, login_raw: bytes, password_raw: bytes) -> AuthResult:
        peer = _peer_ip(server.session) if server.session else "?"
        if not _uses_tls(server):  # belt and braces: the listeners only offer AUTH over TLS
            return AuthResult(success=False, handled=False, message=str(replies.AUTH_NEEDS_TLS))
        login = login_raw.decode("utf-8", errors="replace")
        password = password_raw.decode("utf-8", errors="replace")
        try:
            account = await self._service.authenticate(login, password)
        except (StoreUnavailable, TimeoutError) as exc:
            log.error("auth.unavailable", peer=peer, error=str(exc))
            return AuthResult(success=False, handled=False, message=str(replies.AUTH_TEMPORARY))
        if account is None:
            log.warning("auth.failed", login=login[:128], peer=peer)
            return AuthResult(success=False, handled=False, message=str(replies.AUTH_FAILED))
        log.info("auth.ok", account=account.login, peer=peer)
        return AuthResult(success=True, auth_data=account.login, message=str(replies.AUTH_OK))

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname  # aiosmtpd leaves this to an EHLO hook
        return [*responses[:-1], "250-ENHANCEDSTATUSCODES", responses[-1]]

    # --- transaction ---

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        refusal = self._service.check_sender(str(session.auth_data), address)
        if refusal is not None:
            return refusal
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        self.end_transaction(session)  # a transaction is always ended before, but be sure
        self._open[session] = (str(session.auth_data), self._service.new_transaction())
        return str(replies.SENDER_OK)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        account, tx = self._open[session]
        refusal = await self._service.check_recipient(account, address, len(envelope.rcpt_tos), tx)
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return str(replies.RECIPIENT_OK)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        mail_from = envelope.mail_from or ""
        content = envelope.original_content or b""
        _, tx = self._open.pop(session)  # from here on, accept() commits or releases it
        return await self._service.accept(
            tx,
            Submitted(
                account=str(session.auth_data),
                mail_from="" if mail_from == "<>" else mail_from,
                recipients=tuple(envelope.rcpt_tos),
                body=content,
                peer_ip=_peer_ip(session),
                helo=session.host_name or "",
            ),
        )

    async def handle_exception(self, error: Exception) -> str:
        log.exception("smtp.session_error", error=repr(error))
        return str(replies.INTERNAL_ERROR)


def _b64(text: str) -> bytes | None:
    try:
        return b64decode(text.encode(), validate=True)
    except (binascii.Error, ValueError):
        return None
