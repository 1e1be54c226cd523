"""The aiosmtpd handler: parse, call the submission service, map the result to a reply."""

from __future__ import annotations

import asyncio
import binascii
import functools
from base64 import b64decode

import structlog
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

from relay import replies
from relay.address import is_null_sender
from relay.errors import AuthLocked, Busy, StoreUnavailable
from relay.spool import Incoming, InflightBudget, Spooled
from relay.submission.dsn_params import dsn_request
from relay.submission.guard import Attempt, AuthGuard
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
    def __init__(
        self,
        service: Submission,
        guard: AuthGuard | None = None,
        budget: InflightBudget | None = None,
    ) -> None:
        self._service = service
        self.budget = budget or InflightBudget(0)
        """DATA bytes in transfer in this process (past its limit, new transfers get 452)."""
        self._guard = guard
        """AUTH brute-force slowdown and lockout (None: none, for tests of other things)."""
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
            blob = await _challenge(server, "")
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
        if parts[0] not in (b"", parts[1]):  # acting as another user (RFC 4616 authzid): no
            return AuthResult(success=False, handled=False, message=str(replies.AUTH_FAILED))
        return await self._check(server, parts[1], parts[2])

    async def auth_LOGIN(self, server: SMTP, args: list[str]) -> AuthResult:
        if len(args) == 1:
            login = await _challenge(server, server.AuthLoginUsernameChallenge)
            if not isinstance(login, bytes):
                return AuthResult(success=False, handled=True)
        else:
            decoded = _b64(args[1])
            if decoded is None:
                await server.push("501 5.5.2 Cannot decode base64")
                return AuthResult(success=False, handled=True)
            login = decoded
        password = await _challenge(server, server.AuthLoginPasswordChallenge)
        if not isinstance(password, bytes):
            return AuthResult(success=False, handled=True)
        return await self._check(server, login, password)

    async def _check(self, server: SMTP, login_raw: bytes, password_raw: bytes) -> AuthResult:
        peer = _peer_ip(server.session) if server.session else "?"
        if not _uses_tls(server):  # belt and braces: the listeners only offer AUTH over TLS
            return AuthResult(success=False, handled=False, message=str(replies.AUTH_NEEDS_TLS))
        login = login_raw.decode("utf-8", errors="replace")
        password = password_raw.decode("utf-8", errors="replace")
        guard = self._guard
        no_room = functools.partial(self._service.no_room, login, password)
        attempt = await guard.check(login, peer, no_room=no_room) if guard is not None else None
        if guard is not None and attempt is not None and attempt.locked is not None:
            return await self._refused(guard, attempt)
        try:
            if attempt is not None and attempt.busy:
                raise Busy("no room in the hashing queue")
            account = await self._service.authenticate(
                login,
                password,
                known=attempt is not None and attempt.known,
                before_hash=functools.partial(guard.count, attempt) if guard and attempt else None,
            )
        except AuthLocked:  # a concurrent attempt reached the lock while this one was read
            assert guard is not None and attempt is not None
            return await self._refused(guard, attempt)
        except (Busy, StoreUnavailable, TimeoutError) as exc:
            if guard is not None and attempt is not None:
                await guard.uncount(attempt)  # not checked, or never answered: no failure
            if isinstance(exc, Busy):
                log.info("auth.busy", peer=peer)
                reply = replies.AUTH_BUSY
            else:
                log.error("auth.unavailable", peer=peer, error=str(exc))
                reply = replies.AUTH_TEMPORARY
            return AuthResult(success=False, handled=False, message=str(reply))
        if account is None:
            # Never the login as typed: it may be the password, typed into the wrong field.
            shown = await self._service.log_name(login)
            delay = await guard.failure(attempt, shown) if guard and attempt else 0.0
            log.warning("auth.failed", login=shown, peer=peer, delay=delay)
            await asyncio.sleep(delay)  # slows a guesser down; other sessions go on
            return AuthResult(success=False, handled=False, message=str(replies.AUTH_FAILED))
        if guard is not None and attempt is not None:
            await guard.success(attempt)
        log.info("auth.ok", account=account.login, peer=peer)
        return AuthResult(success=True, auth_data=account.login, message=str(replies.AUTH_OK))

    async def _refused(self, guard: AuthGuard, attempt: Attempt) -> AuthResult:
        locked = guard.refused(attempt, await self._service.log_name(attempt.login))
        return AuthResult(success=False, handled=False, message=locked)

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname  # aiosmtpd leaves this to an EHLO hook
        return [*responses[:-1], "250-ENHANCEDSTATUSCODES", "250-DSN", responses[-1]]

    # --- transaction ---

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        self.end_transaction(session)  # a transaction is always ended before, but be sure
        if not self.budget.admits(_declared_size(options)):
            return str(replies.SPOOL_BUSY)
        account, tx = str(session.auth_data), self._service.new_transaction()
        refusal = await self._service.check_sender(
            account, address, tx, ret=getattr(envelope, "dsn_ret", None)
        )
        if refusal is not None:
            await self._service.release(account, tx)
            return refusal
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        self._open[session] = (account, tx)
        return str(replies.SENDER_OK)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        account, tx = self._open[session]
        refusal = await self._service.check_recipient(
            account, address, len(envelope.rcpt_tos), tx, getattr(envelope, "dsn_asked", None)
        )
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return str(replies.RECIPIENT_OK)

    async def receive(self, session: Session, declared: int) -> Incoming | str:
        """Where DATA goes (a new spool file), or the 452 when this process has no room."""
        if not self.budget.admits(declared):
            return str(replies.SPOOL_BUSY)
        return await self._service.receive(str(session.auth_data))

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        mail_from = envelope.mail_from or ""
        content = getattr(envelope, "spooled", None)
        assert isinstance(content, Spooled), "DATA is streamed to the spool (server.smtp_DATA)"
        _, tx = self._open.pop(session)  # from here on, accept() commits or releases it
        return await self._service.accept(
            tx,
            Submitted(
                account=str(session.auth_data),
                mail_from="" if is_null_sender(mail_from) else mail_from,
                recipients=tuple(envelope.rcpt_tos),
                body=content,
                peer_ip=_peer_ip(session),
                helo=session.host_name or "",
                dsn=dsn_request(envelope),
            ),
        )

    async def handle_exception(self, error: Exception) -> str:
        log.exception("smtp.session_error", error=repr(error))
        return str(replies.INTERNAL_ERROR)


async def _challenge(server: SMTP, challenge: str) -> object:
    """aiosmtpd's `challenge_auth`, with an over-long answer refused like an over-long command
    (aiosmtpd lets asyncio's ValueError escape, which ends in a 451 and a traceback)."""
    try:
        return await server.challenge_auth(challenge)
    except ValueError:  # the line overran the reader's limit; readline dropped what it had
        reader: asyncio.StreamReader = server._reader
        while True:  # discard the rest of the line, as aiosmtpd does for commands
            try:
                await reader.readuntil(b"\n")
                break
            except asyncio.LimitOverrunError as exc:
                await reader.read(exc.consumed)
            except asyncio.IncompleteReadError:
                break
        await server.push(str(replies.LINE_TOO_LONG))
        return None


def _declared_size(options: list[str]) -> int:
    """The SIZE= a client announced at MAIL (RFC 1870); 0 when none or not a number."""
    for option in options:
        name, _, value = option.partition("=")
        if name.upper() == "SIZE" and value.isdigit():
            return int(value)
    return 0


def _b64(text: str) -> bytes | None:
    try:
        return b64decode(text.encode(), validate=True)
    except (binascii.Error, ValueError):
        return None
