"""Text from outside, made safe to store and print: no escapes, controls or bidi overrides."""

from __future__ import annotations

import pytest

from relay.safe_text import clean_block, clean_line, clean_tree

HOSTILE = [
    ("\x1b[2J\x1b[1;1Hall clear", "all clear"),  # clear screen, move the cursor
    ("\x1b]0;pwned\x07title", "title"),  # window title (OSC, BEL-terminated)
    ("\x1b]8;;http://evil.example\x1b\\link\x1b]8;;\x1b\\", "link"),  # hyperlink
    ("red\x1b[31m!\x1b[0m", "red!"),
    ("c1 csi\x9b2J", "c1 csi"),
    ("nul\x00 bell\x07 del\x7f c1\x85x", "nul bell del c1 x"),
    ("user\u202egnp.exe", "usergnp.exe"),  # right-to-left override
    ("iso\u2066late\u2069", "isolate"),
    ("undecodable \udcff byte", "undecodable \ufffd byte"),
    ("lone escape\x1b", "lone escape"),
]


@pytest.mark.parametrize("raw,expected", HOSTILE)
def test_clean_line_drops_what_a_terminal_would_obey(raw, expected):
    assert clean_line(raw) == expected


def test_a_line_stays_one_line():
    assert clean_line("reason\r\n2026-01-01 operator:eve lift\tforged") == (
        "reason 2026-01-01 operator:eve lift forged"
    )
    assert clean_line("a\u2028b\x0bc\x0cd") == "a b c d"


def test_a_block_keeps_its_lines_and_tabs():
    assert clean_block("Received: x\r\n\tby y\x1b[2J\rZ\n") == "Received: x\n\tby y\nZ\n"


def test_tree_cleans_every_string_and_keeps_the_rest():
    tree = {"a\x1b[1m": ["x\x07y", 3, None, {"k": "v\u202e"}], "n": 1.5, "t": ("\x1b[0m",)}
    assert clean_tree(tree) == {"a": ["xy", 3, None, {"k": "v"}], "n": 1.5, "t": [""]}


def test_ordinary_text_is_untouched():
    text = "Jérôme <j@exämple.com> — 日本語, tab\tand (comments) [brackets] ~!@#$%^&*"
    assert clean_block(text) == text
    assert clean_line(text) == text.replace("\t", " ")
