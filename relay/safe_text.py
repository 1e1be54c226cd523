"""Text from outside (complaints, DNS TXT answers, mail headers) made safe to store and print.

A spam report is written by whoever sends it. Printed raw, its escape sequences repaint the
operator's terminal (clear the screen, hide lines, set the window title) and its bidi
overrides show a login or an id reversed; a line break in a one-line field forges a row of
`relay audit`. So such text is cleaned when it comes in and again when it is shown (records
stored before, and values of other writers, pass the display side).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["clean_block", "clean_line", "clean_tree"]

_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]?"  # CSI: colours, cursor moves, screen clears
    r"|\x1b[\]PX^_][^\x07\x1b\x9c\n]*(?:\x07|\x1b\\|\x9c)?"  # OSC/DCS/…: titles, links
    r"|\x1b[ -/]*[0-~]?"  # the other two- and three-byte escapes
    r"|\x9b[0-?]*[ -/]*[@-~]?"  # CSI in its one-byte C1 form
)
_SURROGATES = re.compile("[\ud800-\udfff]")
"""Undecodable bytes of a header, as the email parser keeps them: not printable, not UTF-8."""
_LINE_BREAKS = re.compile("\r\n|[\r\n\v\f\x85\u2028\u2029]")
_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_CONTROLS = re.compile(f"[\x00-\x08\x0e-\x1f\x7f-\x9f{_BIDI}]")
"""C0 but tab and line breaks, DEL, C1, and the bidi marks, embeddings, overrides, isolates."""


def clean_line(text: str) -> str:
    """One line: escapes and control characters dropped, line breaks and tabs as spaces."""
    text = _common(text)
    return _CONTROLS.sub("", _LINE_BREAKS.sub(" ", text).replace("\t", " ")).strip()


def clean_block(text: str) -> str:
    """Several lines (headers, a report): as `clean_line`, but keeps tabs and line breaks
    (each as `\\n`)."""
    return _CONTROLS.sub("", _LINE_BREAKS.sub("\n", _common(text)))


def clean_tree(value: Any) -> Any:
    """A JSON-like value (evidence) with every string in it cleaned as a block, keys as lines."""
    if isinstance(value, str):
        return clean_block(value)
    if isinstance(value, dict):
        return {clean_line(str(k)): clean_tree(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_tree(v) for v in value]
    return value


def _common(text: str) -> str:
    return _ESCAPES.sub("", _SURROGATES.sub("\ufffd", text))
