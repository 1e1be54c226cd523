"""Spool and queue compared, both ways: pure, so the rule is tested without a disk."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

__all__ = ["SpoolReport", "compare"]


@dataclass(frozen=True)
class SpoolReport:
    orphans: list[tuple[str, float, int]] = field(default_factory=list)
    """(id, age in seconds, size) of files no queued message names, older than the grace:
    left by a crash between the spool and the queue, or by a removal that failed. Not
    removed automatically: after a Redis restored from an old copy they may be the only copy
    of accepted mail."""
    missing: list[str] = field(default_factory=list)
    """Queued messages whose body is not in the spool: they cannot be delivered."""
    files: int = 0
    queued: int = 0


def compare(
    files: Iterable[tuple[str, float, int]],
    queued: set[str],
    *,
    now: float,
    grace: float,
    kept: Collection[str] = frozenset(),
) -> SpoolReport:
    """`files`: (id, mtime, size) in the spool; `queued`: the ids of queued messages. A file
    younger than `grace` may be a transfer in progress, not an orphan. `kept`: ids of bodies
    held on purpose outside the queue (the quarantine, relay/content/), never orphans."""
    report = SpoolReport(queued=len(queued))
    seen: set[str] = set()
    count = 0
    for message_id, mtime, size in files:
        count += 1
        seen.add(message_id)
        if message_id not in queued and message_id not in kept and now - mtime >= grace:
            report.orphans.append((message_id, now - mtime, size))
    report.missing.extend(sorted(queued - seen))
    return SpoolReport(report.orphans, report.missing, count, len(queued))
