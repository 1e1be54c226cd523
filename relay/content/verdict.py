"""What the scanners' results mean for a message: pure, so every combination is tested
without servers.

Malware always wins (nothing else makes mail carrying it acceptable). A scanner that gave no
verdict counts as configured (`on_error`): `tempfail` asks the client to try later,
`fail_open` goes on as if it had found nothing. A spam score at or over `reject_at` refuses
the message even when the account allow-lists its sender or recipients (a hijacked account
could list its targets); at or over `quarantine_at` it is held, unless allow-listed.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "Action",
    "MalwareResult",
    "OnError",
    "ScanPolicy",
    "SpamResult",
    "Verdict",
    "decide",
    "suspend_due",
]


class OnError(StrEnum):
    TEMPFAIL = "tempfail"
    FAIL_OPEN = "fail_open"


class Action(StrEnum):
    DELIVER = "deliver"
    TEMPFAIL = "tempfail"
    REJECT_MALWARE = "malware"
    REJECT_SPAM = "spam-reject"
    QUARANTINE_SPAM = "spam-quarantine"


@dataclass(frozen=True)
class MalwareResult:
    signature: str | None = None
    """The signature found; None: clean (or no verdict, see `error`)."""
    error: str | None = None
    """Why clamd gave no verdict (down, slow, an ERROR reply)."""


@dataclass(frozen=True)
class SpamResult:
    score: float | None = None
    error: str | None = None
    """Why rspamd gave no verdict."""


@dataclass(frozen=True)
class ScanPolicy:
    malware_on_error: OnError = OnError.TEMPFAIL
    spam_on_error: OnError = OnError.FAIL_OPEN
    quarantine_at: float = 6.0
    reject_at: float = 15.0


@dataclass(frozen=True)
class Verdict:
    action: Action
    reason: str = ""
    """For the log and the quarantine record: a signature, a score, a scanner's failure."""
    signature: str | None = None
    score: float | None = None
    allow_listed: bool = False
    """The spam quarantine was skipped because of an allow-list entry."""


def decide(
    *,
    malware: MalwareResult | None,
    spam: SpamResult | None,
    policy: ScanPolicy,
    allowed: bool = False,
) -> Verdict:
    """The verdict on one message. None for a scanner that is not configured. `allowed`: the
    sender or every recipient is on an allow list (skips the spam quarantine only)."""
    if malware is not None and malware.signature is not None:
        return Verdict(Action.REJECT_MALWARE, malware.signature, signature=malware.signature)
    if (
        malware is not None
        and malware.error is not None
        and policy.malware_on_error is OnError.TEMPFAIL
    ):
        return Verdict(Action.TEMPFAIL, f"clamd: {malware.error}")
    score = spam.score if spam is not None else None
    if spam is not None and spam.error is not None and score is None:
        if policy.spam_on_error is OnError.TEMPFAIL:
            return Verdict(Action.TEMPFAIL, f"rspamd: {spam.error}")
        return Verdict(Action.DELIVER)
    if score is None:
        return Verdict(Action.DELIVER)
    if score >= policy.reject_at:
        return Verdict(Action.REJECT_SPAM, f"score {score:.2f}", score=score)
    if score >= policy.quarantine_at:
        if allowed:
            return Verdict(Action.DELIVER, f"score {score:.2f}", score=score, allow_listed=True)
        return Verdict(Action.QUARANTINE_SPAM, f"score {score:.2f}", score=score)
    return Verdict(Action.DELIVER, score=score)


def suspend_due(hits: int, suspend_after: int) -> bool:
    """Malware hits of one account within the window: at `suspend_after`, it is suspended
    (0: never automatically; every hit is still flagged in the audit log)."""
    return suspend_after > 0 and hits >= suspend_after
