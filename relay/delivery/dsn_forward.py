"""DSN parameters passed on to the next hop (RFC 3461 section 5.2): pure.

When the next hop advertises DSN, the sender's RET, ENVID, NOTIFY and ORCPT go with the
transaction, and the destination, not this relay, reports success (this relay then sends no
"relayed" notice). When it does not, the relay keeps them and reports the hand-over itself.
"""

from __future__ import annotations

from relay.queue.model import DsnRequest

__all__ = ["mail_options", "rcpt_options", "xtext_encode"]


def xtext_encode(text: str) -> str:
    """RFC 3461 section 4: "+", "=", controls, space and non-ASCII become "+XX" (UTF-8)."""
    out = []
    for byte in text.encode("utf-8"):
        if 33 <= byte <= 126 and byte not in (ord("+"), ord("=")):
            out.append(chr(byte))
        else:
            out.append(f"+{byte:02X}")
    return "".join(out)


def mail_options(dsn: DsnRequest) -> list[str]:
    options = []
    if dsn.ret is not None:
        options.append(f"RET={dsn.ret}")
    if dsn.envid is not None:
        options.append(f"ENVID={xtext_encode(dsn.envid)}")
    return options


def rcpt_options(dsn: DsnRequest, recipient: str) -> list[str]:
    """NOTIFY and ORCPT as the sender gave them; none when it gave none (the next hop's
    default then applies, which is also ours: FAILURE,DELAY)."""
    params = dsn.of(recipient)
    options = []
    if params.notify is not None:
        notify = ",".join(sorted(params.notify)) if params.notify else "NEVER"
        options.append(f"NOTIFY={notify}")
    if params.orcpt is not None:
        kind, _, address = params.orcpt.partition(";")
        options.append(f"ORCPT={kind};{xtext_encode(address)}")
    return options
