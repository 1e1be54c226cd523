"""`relay node list|drain|resume|forget`: the nodes of the fleet, as their heartbeats say."""

from __future__ import annotations

import argparse

from relay.abuse.audit import AuditLog
from relay.app import open_redis
from relay.cli.common import load, operator_actor, print_json
from relay.clock import SystemClock
from relay.node.directory import NodeDirectory
from relay.node.registry import NodeRecord, beat_age, node_state
from relay.safe_text import clean_line


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    node = commands.add_parser("node", help="the nodes of the fleet: list, drain, resume, forget")
    sub = node.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = sub.add_parser("list", help="every node with its processes, spool and state")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_list)
    drain = sub.add_parser("drain", help="the node accepts no new mail; it delivers its queue")
    drain.add_argument("id")
    drain.add_argument("--reason", default="", help="why (in the audit log)")
    drain.set_defaults(handler=_drain)
    resume = sub.add_parser("resume", help="the node accepts mail again")
    resume.add_argument("id")
    resume.add_argument("--reason", default="", help="why (in the audit log)")
    resume.set_defaults(handler=_resume)
    forget = sub.add_parser("forget", help="remove a node gone for good (not while it beats)")
    forget.add_argument("id")
    forget.add_argument("--reason", default="", help="why (in the audit log)")
    forget.set_defaults(handler=_forget)


def size_text(size: int) -> str:
    """Bytes as operators read them: `0 B`, `4.2 KB`, `1.3 GB` (powers of 1000, as config)."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def row(record: NodeRecord, now: float) -> str:
    """One node as a line of `relay node list` (a node that is down: what its last beat said)."""
    state: str = node_state(record, now)
    if record.drain_asked is not None and state == "accepting":
        state = "draining (asked)"  # the node reads it at its next beat
    egress = ",".join(record.egress) or "-"
    return clean_line(
        f"{record.id:<20} {record.version:<8} {record.processes:>3} proc"
        f" {record.spool_files:>8} files {size_text(record.spool_bytes):>9}"
        f" {beat_age(record, now):>7.1f}s ago  {state:<16} {egress}"
    )


async def _list(args: argparse.Namespace) -> int:
    settings = load(args)
    async with open_redis(settings) as redis:
        records = await NodeDirectory(redis, SystemClock()).list()
    now = SystemClock().now()
    if args.json:
        print_json([r.as_dict(now) for r in records])
        return 0
    if not records:
        print("no node has beaten yet (a node writes its record when `relay run` starts)")
        return 0
    for record in records:
        print(row(record, now))
    return 0


async def _audit(redis: object, action: str, node_id: str, reason: str) -> None:
    await AuditLog(redis, SystemClock()).append(  # type: ignore[arg-type]
        actor=operator_actor(), action=action, subject=f"node:{node_id}", reason=reason
    )


async def _drain(args: argparse.Namespace) -> int:
    settings = load(args)
    async with open_redis(settings) as redis:
        asked = await NodeDirectory(redis, SystemClock()).drain(args.id)
        if asked:
            await _audit(redis, "node-drain", args.id, args.reason)
    if not asked:
        print(f"{args.id} was draining already")
        return 0
    print(
        f"draining {args.id}: it refuses new mail from its next heartbeat and delivers what"
        " it holds (`relay node list` shows its spool going down)"
    )
    return 0


async def _resume(args: argparse.Namespace) -> int:
    settings = load(args)
    async with open_redis(settings) as redis:
        resumed = await NodeDirectory(redis, SystemClock()).resume(args.id)
        if resumed:
            await _audit(redis, "node-resume", args.id, args.reason)
    print(f"{args.id} accepts mail again" if resumed else f"{args.id} was not draining")
    return 0


async def _forget(args: argparse.Namespace) -> int:
    settings = load(args)
    async with open_redis(settings) as redis:
        record = await NodeDirectory(redis, SystemClock()).forget(args.id)
        await _audit(redis, "node-forget", args.id, args.reason)
    print(f"forgot node {args.id}")
    if record.spool_files:
        print(
            f"warning: its spool held {record.spool_files} bodies at its last beat: mail queued"
            " there is delivered only if a node with that id and spool comes back"
        )
    return 0
