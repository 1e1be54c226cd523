"""Content safety of outgoing mail: malware (clamd) and spam (rspamd) scanning at DATA, the
quarantine, allow/deny lists, and their counts."""

from relay.content.errors import ContentError, NotInQuarantine, ReleaseRefused, ScannerUnavailable
from relay.content.verdict import Action, OnError, ScanPolicy, Verdict, decide

__all__ = [
    "Action",
    "ContentError",
    "NotInQuarantine",
    "OnError",
    "ReleaseRefused",
    "ScanPolicy",
    "ScannerUnavailable",
    "Verdict",
    "decide",
]
