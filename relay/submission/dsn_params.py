"""DSN parameters of MAIL and RCPT (RFC 3461): RET, ENVID; NOTIFY, ORCPT. Pure.

aiosmtpd uppercases parameters and refuses any it does not know (555), so the server takes
ours out of the command line first, with their case intact (ENVID and ORCPT are
case-sensitive), and hands the rest to aiosmtpd.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from relay.queue.model import NOTIFY_KEYWORDS, DsnRequest, RecipientDsn

__all__ = [
    "MAIL_PARAMS",
    "RCPT_PARAMS",
    "DsnSyntaxError",
    "dsn_request",
    "parse_mail",
    "parse_rcpt",
    "split_params",
    "xtext_decode",
]

MAIL_PARAMS = frozenset({"RET", "ENVID"})
RCPT_PARAMS = frozenset({"NOTIFY", "ORCPT"})
MAX_ENVID = 100
MAX_ORCPT = 500

_XTEXT = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-F]{2})*")
_ADDR_TYPE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")


class DsnSyntaxError(ValueError):
    """A DSN parameter that cannot be used; `reply` is the SMTP answer."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.reply = f"501 5.5.4 {text}"


def split_params(params: str, names: frozenset[str]) -> tuple[dict[str, str], list[str]]:
    """(our parameters by upper-case keyword with their values as given, the other tokens)."""
    ours: dict[str, str] = {}
    others: list[str] = []
    for token in params.split():
        keyword, eq, value = token.partition("=")
        if keyword.upper() not in names:
            others.append(token)
            continue
        if not eq or not value:
            raise DsnSyntaxError(f"{keyword.upper()} needs a value")
        if keyword.upper() in ours:
            raise DsnSyntaxError(f"{keyword.upper()} given twice")
        ours[keyword.upper()] = value
    return ours, others


def xtext_decode(text: str) -> str:
    """RFC 3461 xtext: printable ASCII, with "+XX" for any other byte and for "+" and "="."""
    if not _XTEXT.fullmatch(text):
        raise DsnSyntaxError(f"not xtext: {text[:40]!r}")
    return re.sub(r"\+([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), text)


def parse_mail(params: dict[str, str]) -> tuple[Literal["FULL", "HDRS"] | None, str | None]:
    """(RET, ENVID decoded) of MAIL FROM."""
    ret: Literal["FULL", "HDRS"] | None = None
    if "RET" in params:
        value = params["RET"].upper()
        if value == "FULL":
            ret = "FULL"
        elif value == "HDRS":
            ret = "HDRS"
        else:
            raise DsnSyntaxError("RET must be FULL or HDRS")
    envid = None
    if "ENVID" in params:
        if len(params["ENVID"]) > MAX_ENVID:
            raise DsnSyntaxError(f"ENVID longer than {MAX_ENVID} characters")
        envid = xtext_decode(params["ENVID"])
        if not all(" " <= ch <= "~" for ch in envid):
            raise DsnSyntaxError("ENVID must decode to printable ASCII")
    return ret, envid


def parse_rcpt(params: dict[str, str]) -> RecipientDsn:
    """NOTIFY (NEVER is the empty set) and ORCPT (`type;address`, decoded) of RCPT TO."""
    notify = None
    if "NOTIFY" in params:
        words = [w.upper() for w in params["NOTIFY"].split(",")]
        if words == ["NEVER"]:
            notify = frozenset[str]()
        elif not words or not set(words) <= NOTIFY_KEYWORDS or len(set(words)) != len(words):
            raise DsnSyntaxError("NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY")
        else:
            notify = frozenset(words)
    orcpt = None
    if "ORCPT" in params:
        value = params["ORCPT"]
        kind, semicolon, address = value.partition(";")
        if len(value) > MAX_ORCPT or not semicolon or not _ADDR_TYPE.fullmatch(kind):
            raise DsnSyntaxError("ORCPT must be addr-type;address, e.g. rfc822;bob@example.com")
        # RFC 6533: a utf-8 address comes as is; others are xtext.
        decoded = address if kind.lower() == "utf-8" else xtext_decode(address)
        if not decoded or any(ch < " " or ch == "\x7f" for ch in decoded):
            raise DsnSyntaxError("ORCPT address is empty or has control characters")
        orcpt = f"{kind.lower()};{decoded}"
    return RecipientDsn(notify, orcpt)


def dsn_request(envelope: Any) -> DsnRequest:
    """What the server recorded on the envelope (see the server's envelope class)."""
    return DsnRequest(
        ret=getattr(envelope, "dsn_ret", None),
        envid=getattr(envelope, "dsn_envid", None),
        recipients=tuple(getattr(envelope, "dsn_rcpts", {}).items()),
    )
