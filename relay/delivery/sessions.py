"""Open SMTP sessions kept for the next message to the same server from the same IP.

Several messages then go over one session (no new TCP, TLS and EHLO each time). A session
is reused for at most `max_messages`, and closed after `idle` seconds without use.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import aiosmtplib

__all__ = ["PooledSession", "SessionKey", "SessionPool"]

SessionKey = tuple[str, str, int]
"""(egress IP or "", server address, port)."""

_QUIT_TIMEOUT = 5.0


@dataclass(eq=False)
class PooledSession:
    smtp: aiosmtplib.SMTP
    tls: bool
    remote: str
    """The hop's name (MX host) the session is with."""
    verified: bool = False
    """Its TLS certificate was checked (a rule with `tls = "verify"` reuses only these)."""
    policy: str = ""
    """The TLS policy it was opened under, for the delivery log."""
    messages: int = 0
    _timer: asyncio.TimerHandle | None = field(default=None, repr=False)


class SessionPool:
    def __init__(self, *, idle: float, max_messages: int) -> None:
        self._idle = idle
        self._max_messages = max_messages
        self._idle_sessions: dict[SessionKey, list[PooledSession]] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self.reused = 0
        """Sessions taken from the pool (a measure of reuse, for tests and metrics)."""

    def take(self, key: SessionKey) -> PooledSession | None:
        """The most recently used idle session for `key` that still looks connected."""
        sessions = self._idle_sessions.get(key)
        while sessions:
            session = sessions.pop()
            if session._timer is not None:
                session._timer.cancel()
                session._timer = None
            if session.smtp.is_connected:
                if not sessions:
                    del self._idle_sessions[key]
                self.reused += 1
                return session
            session.smtp.close()
        self._idle_sessions.pop(key, None)
        return None

    def give(
        self,
        key: SessionKey,
        session: PooledSession,
        *,
        max_messages: int | None = None,
        idle: float | None = None,
    ) -> None:
        """Keep a session whose transaction is over (the server is ready for MAIL).
        `max_messages`, `idle`: the destination's shaping rule, else the pool's own."""
        session.messages += 1
        idle = self._idle if idle is None else idle
        if session.messages >= (max_messages or self._max_messages) or idle <= 0:
            self._quit(session)
            return
        loop = asyncio.get_running_loop()
        session._timer = loop.call_later(idle, self._expire, key, session)
        self._idle_sessions.setdefault(key, []).append(session)

    def idle_count(self) -> int:
        return sum(len(sessions) for sessions in self._idle_sessions.values())

    async def close(self) -> None:
        """QUIT every idle session (on stop)."""
        for key in list(self._idle_sessions):
            for session in self._idle_sessions.pop(key):
                if session._timer is not None:
                    session._timer.cancel()
                self._quit(session)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    def _expire(self, key: SessionKey, session: PooledSession) -> None:
        sessions = self._idle_sessions.get(key, [])
        if session in sessions:
            sessions.remove(session)
            if not sessions:
                del self._idle_sessions[key]
            self._quit(session)

    def _quit(self, session: PooledSession) -> None:
        task = asyncio.get_running_loop().create_task(_quit(session.smtp))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)


async def _quit(smtp: aiosmtplib.SMTP) -> None:
    with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
        await smtp.quit(timeout=_QUIT_TIMEOUT)
    smtp.close()
