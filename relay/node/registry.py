"""The fleet's nodes as Redis holds them: each node's record, the index of nodes, and what
state a record means.

Keys (every command touches one slot; reading or writing a node and the index are separate
commands, never one MULTI or script, so a Redis Cluster serves them as is):

  node:{ID}   hash: what the node says about itself at each heartbeat (`NodeRecord`), and
              `drain`, the operator's word (`relay node drain`), which only the CLI writes
              and the node reads back at each beat
  nodes       zset: node id -> its last beat (the index `relay node list` starts from)

A node's state is decided from its record and the time (`node_state`, pure): a node whose
last beat is older than `down_after` of its own heartbeats is `down`, whatever it said last.
Each node records its own heartbeat settings, so the CLI judges it by them, not by the
CLI's config.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

__all__ = [
    "NODES",
    "NodeRecord",
    "NodeState",
    "Reported",
    "beat_age",
    "node_key",
    "node_state",
]

NODES = "nodes"
"""The index of nodes: zset id -> last beat (its own slot)."""

DRAIN = "drain"
"""Field of a node's hash set by `relay node drain` (when it was asked), absent otherwise."""

Reported = Literal["accepting", "draining", "stopped"]
"""What a node says of itself: accepting mail, draining (refusing new mail, delivering its
queue), or stopped cleanly (its last beat, written as its supervisor exits)."""

NodeState = Literal["accepting", "draining", "stopped", "down"]


def node_key(node_id: str) -> str:
    """The node's record: its own hash tag, so it lives in one slot of a cluster."""
    return f"node:{{{node_id}}}"


@dataclass(frozen=True)
class NodeRecord:
    id: str
    version: str
    host: str
    """The machine's name (the id may differ from it)."""
    pid: int
    """The supervisor's (or the single process's) pid on that host."""
    processes: int
    """Relay processes running (a supervisor's children alive; 1 for `--processes 1`)."""
    spool_files: int
    spool_bytes: int
    egress: tuple[str, ...]
    listeners: tuple[str, ...]
    state: Reported
    started_at: float
    beat_at: float
    beat_every: float
    """Its `node.heartbeat`, in seconds."""
    down_after: int
    """Its `node.down_after`: beats missed before it counts as down."""
    drain_asked: float | None = None
    """When `relay node drain` asked it to drain (None: not asked, or resumed)."""

    def fields(self) -> dict[str, str]:
        """The hash fields the node writes (never `drain`: that one is the operator's)."""
        return {
            "id": self.id,
            "version": self.version,
            "host": self.host,
            "pid": str(self.pid),
            "processes": str(self.processes),
            "spool_files": str(self.spool_files),
            "spool_bytes": str(self.spool_bytes),
            "egress": json.dumps(list(self.egress)),
            "listeners": json.dumps(list(self.listeners)),
            "state": self.state,
            "started_at": repr(self.started_at),
            "beat_at": repr(self.beat_at),
            "beat_every": repr(self.beat_every),
            "down_after": str(self.down_after),
        }

    @classmethod
    def parse(cls, fields: Mapping[str, str]) -> NodeRecord | None:
        """A record from its hash; None when it is not one (a drain asked for a node id that
        never beat, or a record written by something else)."""
        try:
            state = fields["state"]
            if state not in ("accepting", "draining", "stopped"):
                return None
            drain = fields.get(DRAIN)
            return cls(
                id=fields["id"],
                version=fields.get("version", ""),
                host=fields.get("host", ""),
                pid=int(fields.get("pid", "0")),
                processes=int(fields["processes"]),
                spool_files=int(fields.get("spool_files", "0")),
                spool_bytes=int(fields.get("spool_bytes", "0")),
                egress=tuple(str(ip) for ip in json.loads(fields.get("egress", "[]"))),
                listeners=tuple(str(x) for x in json.loads(fields.get("listeners", "[]"))),
                state=state,  # type: ignore[arg-type]  # checked above
                started_at=float(fields["started_at"]),
                beat_at=float(fields["beat_at"]),
                beat_every=float(fields["beat_every"]),
                down_after=int(fields["down_after"]),
                drain_asked=float(drain) if drain else None,
            )
        except (KeyError, ValueError, TypeError):
            return None

    def as_dict(self, now: float) -> dict[str, Any]:
        """As `relay node list --json` shows it: the record, its state and beat age."""
        shown = asdict(self)
        shown["egress"] = list(self.egress)
        shown["listeners"] = list(self.listeners)
        shown["reported_state"] = self.state
        shown["state"] = node_state(self, now)
        shown["beat_age"] = round(beat_age(self, now), 3)
        return shown


def beat_age(record: NodeRecord, now: float) -> float:
    """Seconds since the node's last beat (0 for a beat from a clock slightly ahead)."""
    return max(0.0, now - record.beat_at)


def node_state(record: NodeRecord, now: float) -> NodeState:
    """What the node is now: `stopped` when its supervisor said so as it exited, `down` when
    its last beat is older than `down_after` of its heartbeats (killed, its host gone, or cut
    off from Redis), else what it said at its last beat."""
    if record.state == "stopped":
        return "stopped"
    if beat_age(record, now) > record.beat_every * record.down_after:
        return "down"
    return record.state
