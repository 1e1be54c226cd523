"""Every SMTP reply the relay sends, as named constants with enhanced status codes (RFC 3463).

aiosmtpd emits some replies of its own without an enhanced code; `enhance()` gives each of
them one, so every reply a client sees carries one (RFC 2034 ENHANCEDSTATUSCODES).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = ["Reply", "enhance"]


@dataclass(frozen=True)
class Reply:
    code: int
    status: str
    text: str

    def format(self, **values: Any) -> str:
        return f"{self.code} {self.status} {self.text.format(**values)}"

    def __str__(self) -> str:
        return f"{self.code} {self.status} {self.text}"


OK = Reply(250, "2.0.0", "OK")
SENDER_OK = Reply(250, "2.1.0", "Sender OK")
RECIPIENT_OK = Reply(250, "2.1.5", "Recipient OK")
QUEUED = Reply(250, "2.0.0", "Queued as {queue_id}")
BYE = Reply(221, "2.0.0", "Bye")
READY_FOR_TLS = Reply(220, "2.0.0", "Ready to start TLS")

AUTH_OK = Reply(235, "2.7.0", "Authentication successful")
AUTH_FAILED = Reply(535, "5.7.8", "Authentication credentials invalid")
AUTH_TEMPORARY = Reply(454, "4.7.0", "Temporary authentication failure, try again later")
AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")
AUTH_NEEDS_TLS = Reply(538, "5.7.11", "Encryption required for requested authentication mechanism")
STARTTLS_FIRST = Reply(530, "5.7.0", "Must issue a STARTTLS command first")
ALREADY_AUTHENTICATED = Reply(503, "5.5.1", "Already authenticated")

MESSAGE_TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients: at most {limit} per message")
BAD_RECIPIENT = Reply(501, "5.1.3", "Bad recipient address syntax: {address}")
BAD_SENDER = Reply(501, "5.1.7", "Bad sender address syntax")
LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long")
OVER_QUOTA = Reply(452, "4.7.1", "Daily quota {limit} reached; next free slot at {when}")
OVER_RATE = Reply(
    451, "4.7.1", "Rate limit of {limit} recipients per minute reached; retry at {when}"
)
OVER_RECIPIENT_RATE = Reply(
    451, "4.7.1", "Limit of {limit} messages per minute to {recipient} reached; retry at {when}"
)
ACCOUNT_EXPIRED = Reply(
    550, "5.7.1", "Account suspended (expired): no active plan; renew it with your provider"
)
ACCOUNT_SUSPENDED = Reply(
    451, "4.7.1", "Account suspended ({reason}); contact your provider's support to lift it"
)
ACCOUNT_DENIED = Reply(550, "5.7.1", "Account suspended ({reason}) for good; contact support")
SPF_NOT_AUTHORIZED = Reply(
    550,
    "5.7.23",
    "SPF of {domain} does not authorize our egress {ip} ({result}); include our record",
)
SENDER_NOT_VERIFIED = Reply(550, "5.7.1", "Sender domain {domain} is not verified for your account")
FROM_NOT_VERIFIED = Reply(
    550, "5.7.1", "Sender domain {domain} (From: header) is not verified for your account"
)
DSN_NEEDS_VERIFIED_SENDER = Reply(
    550,
    "5.7.1",
    "{param} refused: sender domain {domain} is not verified for your account,"
    " so it gets no notices",
)
SUPPRESSED = Reply(550, "5.1.1", "{address} is on your suppression list since {since} ({reason})")
CONTENT_LISTED = Reply(
    554, "5.7.1", "Refused: {what} is on the blocklist {zone}; the account is suspended"
)
MALWARE_FOUND = Reply(
    554, "5.7.1", "Refused: malware found ({signature}); the message is kept for review as {id}"
)
SPAM_REJECTED = Reply(550, "5.7.1", "Refused: the message looks like spam (score {score})")
SCAN_UNAVAILABLE = Reply(451, "4.7.0", "Content scan unavailable; try again later")
QUARANTINED = Reply(250, "2.0.0", "Accepted as {queue_id}, held in quarantine")
DENIED_SENDER = Reply(550, "5.7.1", "Sender {address} refused ({scope} deny list): {reason}")
DENIED_RECIPIENT = Reply(550, "5.7.1", "Recipient {address} refused ({scope} deny list): {reason}")
STORE_UNAVAILABLE = Reply(451, "4.3.0", "Temporary failure, please try again later")
SPOOL_BUSY = Reply(452, "4.3.1", "Too much mail in transfer right now; try again shortly")
SPOOL_FULL = Reply(452, "4.3.1", "Insufficient system storage; try again later")
HEADER_TOO_BIG = Reply(552, "5.3.4", "Header section too large (limit {limit} bytes)")
INTERNAL_ERROR = Reply(451, "4.3.0", "Internal error, please try again later")
TIMEOUT = Reply(421, "4.4.2", "Timeout, closing connection")
AUTH_LOCKED = Reply(454, "4.7.0", "Too many failed logins; try again in {wait}")
AUTH_BUSY = Reply(454, "4.7.0", "Too many logins in progress, try again later")
PRE_AUTH_TIMEOUT = Reply(421, "4.7.0", "Not authenticated in time, closing connection")
TOO_MANY_CONNECTIONS = Reply(421, "4.3.2", "Too many connections, try again later")
TOO_MANY_FROM_IP = Reply(421, "4.7.0", "Too many connections from {ip}, try again later")
NODE_DRAINING = Reply(421, "4.3.2", "Draining: try another server; closing connection")
"""A drained node (`relay node drain`), at connect and at MAIL, and the session is closed: a
421 makes a client try another server (the next MX, or the next address of the name), where
a 452 would have it retry on this one."""

# Default enhanced code for a bare reply, by reply code (RFC 3463 / RFC 5321 usage).
_DEFAULT_STATUS = {
    211: "2.0.0",
    214: "2.0.0",
    220: "2.0.0",
    221: "2.0.0",
    235: "2.7.0",
    250: "2.0.0",
    251: "2.1.5",
    252: "2.5.0",
    421: "4.4.2",
    450: "4.2.0",
    451: "4.3.0",
    452: "4.3.1",
    454: "4.7.0",
    455: "4.5.4",
    500: "5.5.2",
    501: "5.5.4",
    502: "5.5.1",
    503: "5.5.1",
    504: "5.5.4",
    530: "5.7.0",
    534: "5.7.9",
    535: "5.7.8",
    538: "5.7.11",
    550: "5.7.1",
    551: "5.1.6",
    552: "5.3.4",
    553: "5.1.3",
    554: "5.3.0",
    555: "5.5.4",
}
# aiosmtpd's own texts we replace entirely (prefix of its reply → ours).
_REPLACED = {
    "530 Must issue a STARTTLS command first": STARTTLS_FIRST,
    "552 Error: message size exceeds fixed maximum message size": MESSAGE_TOO_BIG,
    "552 Error: Too much mail data": MESSAGE_TOO_BIG,
    "500 Line too long": LINE_TOO_LONG,
    "500 Command line too long": LINE_TOO_LONG,
    "503 Already authenticated": ALREADY_AUTHENTICATED,
    "220 Ready to start TLS": READY_FOR_TLS,
    "221 Bye": BYE,
}
_HAS_STATUS = re.compile(r"^\d{3}[ -][245]\.\d{1,3}\.\d{1,3}( |$)")
_BARE = re.compile(r"^(\d{3})([ -])(.*)$", re.DOTALL)


def enhance(line: str) -> str:
    """Give a reply line an enhanced status code if it has none."""
    for prefix, reply in _REPLACED.items():
        if line.startswith(prefix):
            return str(reply)
    if _HAS_STATUS.match(line):
        return line
    match = _BARE.match(line)
    if not match:
        return line
    code, sep, text = match.groups()
    status = _DEFAULT_STATUS.get(int(code), f"{code[0]}.0.0")
    text = text.removeprefix("Error: ")
    return f"{code}{sep}{status} {text}" if text else f"{code}{sep}{status}"
