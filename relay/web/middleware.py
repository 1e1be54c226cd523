"""Two guards around every request, as plain ASGI: a bound on request bodies, and the
headers that keep the console's forms out of other sites' frames and scripts."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["MAX_BODY", "Guards"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_BODY = 1_000_000
"""Bytes of one request body: forms and JSON here are small; more is refused (413)."""

_HEADERS = [
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (
        b"content-security-policy",
        b"default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:;"
        b" frame-ancestors 'none'; form-action 'self'",
    ),
]


class _TooLarge(Exception):
    pass


class Guards:
    """`large`: path prefixes whose bodies may reach `large_max` bytes (the HTTP send API
    carries whole messages); every other path gets `max_body`."""

    def __init__(
        self,
        app: App,
        max_body: int = MAX_BODY,
        large: tuple[str, ...] = (),
        large_max: int = MAX_BODY,
    ) -> None:
        self.app = app
        self.max_body = max_body
        self.large = large
        self.large_max = large_max

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        limit = self.large_max if self.large and path.startswith(self.large) else self.max_body
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > limit:
            await _refuse(send, 413 if declared.isdigit() else 400)
            return
        seen = 0
        started = False
        docs = path.startswith("/api/docs")

        async def bounded_receive() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _TooLarge
            return message

        async def secure_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if not docs:
                    message["headers"] = [*message.get("headers", []), *_HEADERS]
            await send(message)

        try:
            await self.app(scope, bounded_receive, secure_send)
        except _TooLarge:
            if not started:
                await _refuse(send, 413)


async def _refuse(send: Send, status: int) -> None:
    text = "request body too large" if status == 413 else "bad Content-Length"
    body = json.dumps({"error": text}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *_HEADERS],
        }
    )
    await send({"type": "http.response.body", "body": body})
