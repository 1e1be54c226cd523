"""The 24 h chart of an account as inline SVG: no JavaScript, no image files."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from html import escape

__all__ = ["hourly_svg"]


def hourly_svg(
    hourly: Sequence[tuple[float, int]], *, width: int = 720, height: int = 160, label: str = ""
) -> str:
    """Bars of recipients per clock hour, oldest left; each bar has a tooltip (<title>)."""
    bars = list(hourly)[-25:]
    top = max((n for _, n in bars), default=0) or 1
    pad_bottom, pad_top = 20, 14
    plot = height - pad_bottom - pad_top
    step = width / max(1, len(bars))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" class="chart" width="{width}"'
        f' height="{height}" viewBox="0 0 {width} {height}">',
        f"<title>{escape(label or 'recipients per hour, last 24 h')}</title>",
        f'<text x="2" y="10" font-size="10">max {top}/h</text>',
    ]
    for i, (start, count) in enumerate(bars):
        h = round(plot * count / top, 1)
        x = round(i * step + 1, 1)
        y = round(pad_top + plot - h, 1)
        hour = dt.datetime.fromtimestamp(start, dt.UTC).strftime("%H:00")
        parts.append(
            f'<rect x="{x}" y="{y}" width="{round(step - 2, 1)}" height="{h}" fill="#3b6ea5">'
            f"<title>{hour} UTC: {count}</title></rect>"
        )
        if i % 3 == 0:
            parts.append(f'<text x="{x}" y="{height - 6}" font-size="9">{hour}</text>')
    parts.append("</svg>")
    return "".join(parts)
