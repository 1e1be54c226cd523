"""Server-rendered pages (Jinja2, autoescaped): no front-end build, no JavaScript needed."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from relay.safe_text import clean_line

__all__ = ["render", "templates"]

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


templates.env.filters["when"] = _when
templates.env.filters["clean"] = lambda value: clean_line(str(value))


def render(
    request: Request, name: str, context: dict[str, Any] | None = None, status: int = 200
) -> HTMLResponse:
    from relay.web.deps import csrf_token

    values = {
        "csrf": csrf_token(request),
        "who": request.session.get("name"),
        "kind": request.session.get("kind"),
        **(context or {}),
    }
    return templates.TemplateResponse(request, name, values, status_code=status)
