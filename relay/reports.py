"""Activity reports (contract 000): who sent how much, from which egress IP, with what outcome.

The delivery loop records each attempt's recipient outcomes per hour in Redis:

    activity:HOUR   hash: "a|LOGIN|delivered" / "ip|IP|bounced" ... -> recipients (31 days)

and the reports are sums over the hours of a period (24 h or 30 days), shaped by pure
functions here; the "top senders over 24 h" report reads the quota's own exact window.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import redis.asyncio as aioredis
import structlog

from relay.errors import RelayError
from relay.redis_client import store_errors, text

__all__ = [
    "OUTCOMES",
    "PERIODS",
    "RECENT",
    "ActivityLog",
    "Outcome",
    "Totals",
    "account_outcomes",
    "active_accounts",
    "ip_volumes",
    "top_senders",
]

log = structlog.get_logger("relay.reports")

_KEEP = 31 * 86400
OUTCOMES = ("delivered", "deferred", "bounced")
PERIODS: dict[str, float] = {"24h": 86400.0, "30d": 30 * 86400.0}
Period = Literal["24h", "30d"]


class Outcome(NamedTuple):
    """One recipient's outcome of one delivery attempt."""

    outcome: str
    """delivered, deferred or bounced."""
    egress_ip: str | None
    recipient: str
    reply: str
    """The remote server's reply (or the local error), as `code status text`."""


RECENT = 50
"""Outcomes kept per account for its home page."""


def _recent_key(login: str) -> str:
    return f"recent:{{{login}}}"


def _key(hour: int) -> str:
    return f"activity:{hour}"


@dataclass(frozen=True)
class Totals:
    """Recipients per (kind, name, outcome) over a period: kind `a` (account) or `ip`."""

    counts: Mapping[tuple[str, str, str], int]

    def of(self, kind: str) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for (k, name, outcome), n in self.counts.items():
            if k == kind:
                out.setdefault(name, dict.fromkeys(OUTCOMES, 0))[outcome] = n
        return out


class ActivityLog:
    """`flush_every` > 0 (the delivery loop's): outcomes are counted in memory and written
    in one pipeline per that many seconds by `run`, so a delivery costs Redis nothing more
    (a crash loses at most that long of report data, never mail). 0: written at once."""

    def __init__(self, redis: aioredis.Redis, flush_every: float = 0.0) -> None:
        self._redis = redis
        self._flush_every = flush_every
        self._counts: Counter[tuple[int, str]] = Counter()
        """(hour, field) -> recipients not yet written."""
        self._recent: dict[str, list[str]] = {}
        """account -> outcomes not yet written, oldest first."""

    async def record(self, account: str, outcomes: Iterable[Outcome], now: float) -> None:
        """Count each recipient's outcome of one attempt, and keep the latest ones."""
        hour = int(now // 3600)
        for outcome, ip, recipient, reply in outcomes:
            item = {"at": now, "outcome": outcome, "recipient": recipient, "reply": reply[:300]}
            self._recent.setdefault(account, []).append(json.dumps(item))
            self._counts[(hour, f"a|{account}|{outcome}")] += 1
            if ip:
                self._counts[(hour, f"ip|{ip}|{outcome}")] += 1
        if self._flush_every <= 0:
            await self.flush()

    async def flush(self) -> None:
        """Write what was counted since the last flush (one pipeline)."""
        counts, recent = self._counts, self._recent
        if not counts and not recent:
            return
        self._counts, self._recent = Counter(), {}
        with store_errors():
            async with self._redis.pipeline(transaction=False) as pipe:
                for (hour, field), n in counts.items():
                    pipe.hincrby(_key(hour), field, n)
                for hour in {hour for hour, _ in counts}:
                    pipe.expire(_key(hour), _KEEP)
                for account, items in recent.items():
                    key = _recent_key(account)
                    pipe.lpush(key, *items[-RECENT:])
                    pipe.ltrim(key, 0, RECENT - 1)
                    pipe.expire(key, _KEEP)
                await pipe.execute()

    async def run(self, stop: asyncio.Event) -> None:
        """Flush every `flush_every` seconds until `stop` (a failed flush is logged: report
        data never stops the relay). The last flush is the caller's, once deliveries end."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._flush_every)
            try:
                await self.flush()
            except RelayError as exc:
                log.warning("activity.flush_failed", error=str(exc))

    async def recent(self, login: str) -> list[dict[str, Any]]:
        """The account's latest recipient outcomes, newest first."""
        with store_errors():
            raw = await self._redis.lrange(_recent_key(login), 0, RECENT - 1)
        return [json.loads(text(item)) for item in raw]

    async def totals(self, now: float, period: Period) -> Totals:
        last = int(now // 3600)
        first = int((now - PERIODS[period]) // 3600) + 1
        counts: Counter[tuple[str, str, str]] = Counter()
        with store_errors():
            async with self._redis.pipeline(transaction=False) as pipe:
                for hour in range(first, last + 1):
                    pipe.hgetall(_key(hour))
                rows = await pipe.execute()
        for raw in rows:
            for field, n in raw.items():
                kind, _, rest = text(field).partition("|")
                name, _, outcome = rest.rpartition("|")
                if outcome in OUTCOMES:
                    counts[(kind, name, outcome)] += int(n)
        return Totals(counts)


def top_senders(recipients: Mapping[str, int], limit: int = 20) -> list[dict[str, Any]]:
    """Accounts by recipients, most first (ties by login)."""
    ranked = sorted(
        ((n, login) for login, n in recipients.items() if n > 0), key=lambda x: (-x[0], x[1])
    )
    return [{"account": login, "recipients": n} for n, login in ranked[:limit]]


def account_outcomes(totals: Totals) -> list[dict[str, Any]]:
    return [{"account": name, **row} for name, row in sorted(totals.of("a").items())]


def ip_volumes(totals: Totals, pool: Iterable[str]) -> list[dict[str, Any]]:
    """Per egress IP: recipients delivered, deferred and bounced (the remote refusals)."""
    rows = totals.of("ip")
    for ip in pool:
        rows.setdefault(ip, dict.fromkeys(OUTCOMES, 0))
    return [
        {"ip": ip, **row, "refused": row["deferred"] + row["bounced"]}
        for ip, row in sorted(rows.items())
    ]


def active_accounts(totals: Totals, recent: Iterable[str] = ()) -> list[str]:
    """Accounts with any outcome in the period, or recipients in the quota window now."""
    return sorted(set(totals.of("a")) | set(recent))
