"""The web package's errors: each carries the HTTP status it is answered with."""

from __future__ import annotations

from relay.errors import RelayError

__all__ = ["CsrfFailed", "Forbidden", "NotFoundError", "Unauthenticated", "WebError"]


class WebError(RelayError):
    status = 400


class Unauthenticated(WebError):
    status = 401


class Forbidden(WebError):
    status = 403


class CsrfFailed(Forbidden):
    pass


class NotFoundError(WebError):
    status = 404
