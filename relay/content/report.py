"""The content report (`relay report content`, the console's Reports page, the API): viruses
by signature and account, spam verdicts by account, scanner failures, and what the
quarantine holds by kind and by account."""

from __future__ import annotations

from typing import Any

from relay.content.quarantine import Held, QuarantineStore
from relay.content.stats import ContentStats

__all__ = ["content_report"]


async def content_report(stats: ContentStats, store: QuarantineStore) -> dict[str, Any]:
    counts = await stats.counts()
    held = await store.listing(limit=1_000_000)
    by_kind: dict[str, dict[str, int]] = {k.value: {"messages": 0, "bytes": 0} for k in Held}
    by_account: dict[str, dict[str, int]] = {}
    for q in held:
        for row in (
            by_kind[q.kind.value],
            by_account.setdefault(q.account, {"messages": 0, "bytes": 0}),
        ):
            row["messages"] += 1
            row["bytes"] += q.size
    return {
        **counts,
        "quarantine": {"by_kind": by_kind, "by_account": dict(sorted(by_account.items()))},
    }
