"""Prometheus metrics, one registry across the relay's processes (prometheus_client's
multiprocess mode: each process writes its counters to files in `http.metrics_dir`, the
process serving `/metrics` sums them).

`prometheus_client` decides at import whether it runs in multiprocess mode (from
`PROMETHEUS_MULTIPROC_DIR`), so it is imported here only after `prepare` has set that up;
the supervisor calls `prepare` once per node before forking, a single process at start.
Until then (tests, operator commands) every recording call is a no-op.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

__all__ = [
    "dnsbl_lookup",
    "mark_dead",
    "metrics_text",
    "prepare",
    "record",
    "submission_outcome",
]

_ENV = "PROMETHEUS_MULTIPROC_DIR"
_metrics: dict[str, Any] = {}


def prepare(folder: Path) -> None:
    """Empty `folder` (stale files of an earlier run would add to the counts), point
    prometheus_client at it and define the metrics. Call before forking the children."""
    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, mode=0o700)
    os.environ[_ENV] = str(folder.absolute())
    _define()


def _define() -> None:
    if _metrics:  # defined once per process (a second `prepare` only empties the folder)
        return
    from prometheus_client import Counter, Gauge, Histogram

    _metrics.update(
        accepted=Counter("relay_messages_accepted", "Messages accepted (250 after DATA)"),
        refused=Counter("relay_messages_refused", "Submissions refused, by reason", ["reason"]),
        recipients=Counter(
            "relay_recipients",
            "Recipient outcomes of delivery attempts, per egress IP",
            ["outcome", "egress_ip"],
        ),
        quota_latency=Histogram(
            "relay_quota_decision_seconds",
            "Time of one quota decision (the Redis reservation at RCPT)",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
        ),
        dnsbl_lookups=Counter("relay_dnsbl_lookups", "DNSBL lookups", ["zone"]),
        dnsbl_listings=Counter(
            "relay_dnsbl_listings", "DNSBL lookups that found a listing", ["zone"]
        ),
        sessions=Gauge(
            "relay_smtp_sessions_open", "SMTP sessions open", multiprocess_mode="livesum"
        ),
        auth_failures=Counter("relay_auth_failures", "Failed SMTP and web logins"),
        auth_locks=Counter("relay_auth_locks", "Logins or addresses locked by the guard"),
    )


def record(name: str, amount: float = 1.0, **labels: str) -> None:
    """Count one event (no-op before `prepare`). Gauges: `sessions` with ±1."""
    metric = _metrics.get(name)
    if metric is None:
        return
    target = metric.labels(**labels) if labels else metric
    if name == "quota_latency":
        target.observe(amount)
    else:
        target.inc(amount)


def submission_outcome(command: str, reply: str) -> None:
    """A reply to MAIL, RCPT or DATA: a 250 to DATA is an accepted message, a 4xx/5xx a
    refusal, labelled by command and status (`RCPT 452 4.7.1`: a bounded set of values)."""
    if not _metrics:
        return
    if command == "DATA" and reply.startswith("250"):
        _metrics["accepted"].inc()
    elif reply[:1] in ("4", "5"):
        parts = reply.split(" ", 2)
        status = parts[1] if len(parts) > 1 and parts[1][:1].isdigit() and "." in parts[1] else ""
        _metrics["refused"].labels(reason=f"{command} {parts[0]} {status}".strip()).inc()


def dnsbl_lookup(zone: str, listed: bool) -> None:
    record("dnsbl_lookups", zone=zone)
    if listed:
        record("dnsbl_listings", zone=zone)


def mark_dead(pid: int) -> None:
    """A child died: its live gauges (open sessions) no longer count."""
    if os.environ.get(_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def metrics_text(extra: str = "") -> tuple[bytes, str]:
    """The exposition text of every process of the node, plus `extra` lines (gauges read
    from Redis at scrape time: queue depth and oldest age)."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    if os.environ.get(_ENV):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        body = generate_latest(registry)
    else:
        from prometheus_client import REGISTRY

        body = generate_latest(REGISTRY)
    return body + extra.encode(), CONTENT_TYPE_LATEST
