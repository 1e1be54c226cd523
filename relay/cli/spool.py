"""`relay spool check`: bodies on disk against messages in the queue, both ways."""

from __future__ import annotations

import argparse
import time

from relay.app import open_redis
from relay.cli.common import Failure, load, print_json
from relay.clock import SystemClock
from relay.content.factory import quarantine_store
from relay.errors import NotFound
from relay.queue import QueueStore
from relay.spool.check import compare


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    spool = commands.add_parser("spool", help="the message bodies on this node's disk")
    sub = spool.add_subparsers(dest="action", required=True, metavar="ACTION")
    check = sub.add_parser(
        "check",
        help="orphan files (no queued message) and queued messages without a body",
    )
    check.add_argument(
        "--remove-orphans", action="store_true", help="delete the orphan files it lists"
    )
    check.add_argument("--json", action="store_true")
    check.set_defaults(handler=_check)


async def _check(args: argparse.Namespace) -> int:
    settings = load(args)
    async with open_redis(settings) as redis:
        queue = QueueStore.from_settings(redis, SystemClock(), settings)
        queued = await queue.message_ids()
        quarantined = await quarantine_store(redis, settings, SystemClock(), queue).on_node()
        report = compare(
            queue.spool.entries(),
            queued,
            now=time.time(),
            grace=settings.spool.orphan_grace.seconds,
            kept=quarantined,
        )
        missing = []
        for message_id in report.missing:  # ended while we looked: not missing
            try:
                await queue.meta(message_id)
            except NotFound:
                continue
            if not queue.spool.exists(message_id):
                missing.append(message_id)
        removed = 0
        if args.remove_orphans:
            removed = sum(queue.spool.remove(mid) for mid, _, _ in report.orphans)
    if args.json:
        print_json(
            {
                "dir": str(settings.spool.dir),
                "files": report.files,
                "queued": report.queued,
                "orphans": [{"id": i, "age": a, "size": s} for i, a, s in report.orphans],
                "missing": missing,
                "removed": removed,
            }
        )
    else:
        print(f"{settings.spool.dir}: {report.files} file(s), {report.queued} queued message(s)")
        for message_id, age, size in report.orphans:
            print(f"orphan  {message_id}  {size} bytes, {age / 3600:.1f} h old")
        for message_id in missing:
            print(f"MISSING {message_id}  queued, but its body is not in the spool")
        if removed:
            print(f"removed {removed} orphan file(s)")
    if missing:
        raise Failure(f"{len(missing)} queued message(s) have no body in the spool")
    return 0
