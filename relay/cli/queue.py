"""`relay queue list|show`."""

from __future__ import annotations

import argparse
import datetime as dt

from relay.app import open_redis
from relay.cli.common import load, print_json
from relay.clock import SystemClock
from relay.queue import QueueStore


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    queue = commands.add_parser("queue", help="inspect the delivery queue")
    sub = queue.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = sub.add_parser("list", help="messages in the queue, oldest first")
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_list)
    show = sub.add_parser("show", help="one message and its delivery jobs")
    show.add_argument("id")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=_show)


def _when(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


async def _list(args: argparse.Namespace) -> int:
    async with open_redis(load(args)) as redis:
        store = QueueStore(redis, SystemClock())
        messages = await store.list_messages(args.limit)
        total = await store.count()
    if args.json:
        print_json({"total": total, "messages": [m.as_dict() for m in messages]})
        return 0
    for m in messages:
        sender = m.mail_from or "<>"
        print(f"{m.id}  {_when(m.created_at)}  {m.account:<20} {sender} -> {len(m.recipients)}")
    print(f"{total} message(s) in the queue")
    return 0


async def _show(args: argparse.Namespace) -> int:
    async with open_redis(load(args)) as redis:
        store = QueueStore(redis, SystemClock())
        meta = (await store.load(args.id)).meta
        jobs = await store.jobs_of(args.id)
    if args.json:
        print_json({**meta.as_dict(), "jobs": [j.as_dict() for j in jobs]})
        return 0
    print(f"id:         {meta.id}")
    print(f"account:    {meta.account}")
    print(f"from:       {meta.mail_from or '<>'}")
    print(f"created:    {_when(meta.created_at)}")
    print(f"size:       {meta.size} bytes")
    for job in jobs:
        print(f"job {job.id}: {job.domain} {', '.join(job.recipients)}")
        print(f"    attempts {job.attempts}, next {_when(job.due_at)}")
        if job.last_error:
            print(f"    last error: {job.last_error}")
    return 0
