"""The relay's HTTP side: JSON API, operators' console, customers' home, health, metrics.

Imported lazily (FastAPI, uvicorn and Jinja2 cost a few hundred milliseconds): the operator
commands import `relay.web.auth` alone, and `relay run` the rest only when `http.enabled`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["WebServices", "create_app", "http_socket", "serve_http"]


def __getattr__(name: str) -> Any:
    if name in ("create_app", "http_socket", "serve_http"):
        from relay.web import app

        return getattr(app, name)
    if name == "WebServices":
        from relay.web.services import WebServices

        return WebServices
    raise AttributeError(name)
