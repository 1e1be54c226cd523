"""A quota decision as the SMTP reply a customer reads: pure, so every wording is tested."""

from __future__ import annotations

import datetime as dt

from quota import Decision, Verdict
from relay import replies

__all__ = ["format_wait", "is_limit", "refusal"]


def format_wait(seconds: float) -> str:
    """`2h13m`, `4m05s`, `12s`: rounded up, so a client retrying then is not refused again."""
    total = max(1, int(-(-seconds // 1)))
    if total >= 3600:  # shown to the minute: round the minute up too
        total = -(-total // 60) * 60
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _when(retry_at: float | None, now: float) -> str:
    if retry_at is None:
        return "not by waiting; contact support"
    clock = dt.datetime.fromtimestamp(retry_at, dt.UTC).strftime("%H:%M:%SZ")
    return f"{clock} (in {format_wait(retry_at - now)})"


def is_limit(decision: Decision) -> bool:
    """A refusal that waiting lifts (quota, rates), as against the account's state."""
    return decision.verdict in (
        Verdict.OVER_QUOTA,
        Verdict.OVER_RATE,
        Verdict.OVER_RECIPIENT_RATE,
    )


def refusal(decision: Decision, recipient: str, now: float) -> str | None:
    """The reply refusing this recipient, or None when the decision allows it."""
    verdict = decision.verdict
    if verdict is Verdict.ALLOWED:
        return None
    if verdict is Verdict.OVER_QUOTA:
        return replies.OVER_QUOTA.format(limit=decision.limit, when=_when(decision.retry_at, now))
    if verdict is Verdict.OVER_RATE:
        return replies.OVER_RATE.format(limit=decision.limit, when=_when(decision.retry_at, now))
    if verdict is Verdict.OVER_RECIPIENT_RATE:
        return replies.OVER_RECIPIENT_RATE.format(
            limit=decision.limit, recipient=recipient[:100], when=_when(decision.retry_at, now)
        )
    if verdict is Verdict.EXPIRED:
        return str(replies.ACCOUNT_EXPIRED)
    reply = replies.ACCOUNT_DENIED if decision.permanent else replies.ACCOUNT_SUSPENDED
    return reply.format(reason=decision.reason)
