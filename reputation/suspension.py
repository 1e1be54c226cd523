"""Suspension rules as pure functions (contracts 003 art. 7 and 004 §13).

Kinds: `quota` and `expired` are derived from the quota state and lift themselves; they are
never recorded here. `reputation` (a blocklist listing) and `abuse` (a spam complaint) are
offences and escalate with the account's earlier offences: the first may be lifted by the
user (changing the password) or an operator; the second only by an operator, and not before a
minimum duration (5 days by default); each further one lasts longer, and from the third the
operator may deny reinstatement for good. `admin` is an operator's decision: no escalation.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum

from reputation.errors import ReputationError

__all__ = [
    "EscalationPolicy",
    "Kind",
    "NotAllowed",
    "Status",
    "Terms",
    "check_deny",
    "check_lift",
    "terms_for",
]


class Kind(StrEnum):
    QUOTA = "quota"
    EXPIRED = "expired"
    REPUTATION = "reputation"
    ABUSE = "abuse"
    ADMIN = "admin"

    @property
    def is_offence(self) -> bool:
        return self in (Kind.REPUTATION, Kind.ABUSE)


class Status(StrEnum):
    OPEN = "open"
    LIFTED = "lifted"
    DENIED = "denied"


class NotAllowed(ReputationError):
    """The rules forbid this action on this suspension now; the message says why.

    `not_before`: when the refused lift becomes allowed (an operator's lift before the minimum
    term), so that a caller can say it in its own words (the CLI: when, in how long, and
    that `--force` exists)."""

    def __init__(self, message: str, *, not_before: float | None = None) -> None:
        super().__init__(message)
        self.not_before = not_before


def utc_text(timestamp: float) -> str:
    """`2026-12-06 11:08:05Z`: how times are written to operators."""
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@dataclass(frozen=True)
class EscalationPolicy:
    second_offence_min: float = 5 * 86400.0
    growth: float = 2.0
    """Each offence after the second lasts `growth` times the previous minimum."""
    deny_from: int = 3
    """From this offence on, the operator may refuse reinstatement."""


@dataclass(frozen=True)
class Terms:
    offence: int
    """1 for the first offence of the account; 0 for an admin suspension."""
    user_may_lift: bool
    not_before: float | None
    """Earliest lift; None: any time."""
    may_deny: bool


def terms_for(kind: Kind, earlier_offences: int, now: float, policy: EscalationPolicy) -> Terms:
    if kind in (Kind.QUOTA, Kind.EXPIRED):
        raise NotAllowed(f"{kind} suspensions are derived from the quota, not recorded")
    if kind is Kind.ADMIN:
        return Terms(offence=0, user_may_lift=False, not_before=None, may_deny=True)
    offence = earlier_offences + 1
    if offence == 1:
        return Terms(offence=1, user_may_lift=True, not_before=None, may_deny=False)
    minimum = policy.second_offence_min * policy.growth ** (offence - 2)
    return Terms(
        offence=offence,
        user_may_lift=False,
        not_before=now + minimum,
        may_deny=offence >= policy.deny_from,
    )


def check_lift(
    *, status: Status, terms: Terms, by_operator: bool, now: float, force: bool = False
) -> None:
    """Raise NotAllowed when this actor may not lift this suspension now. `force`: an operator
    overrides the minimum duration (a listing found false); the audit log says so."""
    if status is not Status.OPEN:
        raise NotAllowed(f"the suspension is {status}, not open")
    if not by_operator and not terms.user_may_lift:
        raise NotAllowed(
            f"only an operator can lift this suspension (offence {terms.offence}); contact support"
        )
    if by_operator and not force and terms.not_before is not None and now < terms.not_before:
        raise NotAllowed(
            f"offence {terms.offence}: not before {utc_text(terms.not_before)}",
            not_before=terms.not_before,
        )


def check_deny(*, status: Status, terms: Terms) -> None:
    if status is not Status.OPEN:
        raise NotAllowed(f"the suspension is {status}, not open")
    if not terms.may_deny:
        raise NotAllowed(
            f"offence {terms.offence}: reinstatement can be refused only from offence"
            " 3 on; lift it when its term allows"
        )
