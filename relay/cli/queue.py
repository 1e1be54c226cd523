"""`relay queue list|show|hold|release|retry|delete`."""

from __future__ import annotations

import argparse

from relay.app import open_redis
from relay.cli.common import Failure, load, print_json, when
from relay.clock import SystemClock
from relay.queue import QueueStore


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    queue = commands.add_parser("queue", help="inspect and act on the delivery queue")
    sub = queue.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = sub.add_parser("list", help="messages in the queue, oldest first")
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_list)
    show = sub.add_parser("show", help="one message and its delivery jobs")
    show.add_argument("id")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=_show)
    for name, text in [
        ("hold", "stop attempting (held mail does not expire; --account: mail queued later too)"),
        ("release", "attempt held mail again now"),
        ("retry", "attempt now instead of at the next retry time"),
        ("delete", "drop from the queue, without any notice to the sender"),
    ]:
        action = sub.add_parser(name, help=text)
        target = action.add_mutually_exclusive_group(required=True)
        target.add_argument("id", nargs="?", help="queue id")
        target.add_argument("--account", metavar="LOGIN", help="every message of the account")
        action.set_defaults(handler=_act, verb=name)


def _flags(held_at: float | None, notice: str) -> str:
    flags = []
    if held_at is not None:
        flags.append("HELD")
    if notice:
        flags.append(f"{notice} notice")
    return f"  [{', '.join(flags)}]" if flags else ""


async def _list(args: argparse.Namespace) -> int:
    settings = load(args)
    async with open_redis(settings) as redis:
        store = QueueStore.from_settings(redis, SystemClock(), settings)
        messages = await store.list_messages(args.limit)
        total = await store.count()
    if args.json:
        print_json({"total": total, "messages": [m.as_dict() for m in messages]})
        return 0
    for m in messages:
        sender = m.mail_from or "<>"
        print(
            f"{m.id}  {when(m.created_at)}  {m.account:<20} {sender} -> {len(m.recipients)}"
            + _flags(m.held_at, m.notice)
        )
    print(f"{total} message(s) in the queue")
    return 0


async def _show(args: argparse.Namespace) -> int:
    settings = load(args)
    async with open_redis(settings) as redis:
        store = QueueStore.from_settings(redis, SystemClock(), settings)
        meta = await store.meta(args.id)
        jobs = await store.jobs_of(args.id)
        spooled = store.spool.exists(args.id)
    if args.json:
        print_json({**meta.as_dict(), "spooled": spooled, "jobs": [j.as_dict() for j in jobs]})
        return 0
    print(f"id:         {meta.id}")
    print(f"account:    {meta.account}")
    print(f"from:       {meta.mail_from or '<>'}")
    print(f"created:    {when(meta.created_at)}")
    print(f"size:       {meta.size} bytes")
    if not spooled:
        print("body:       MISSING from this node's spool (relay spool check)")
    if meta.notice:
        print(f"notice:     {meta.notice} notice (from <>)")
    if meta.held_at is not None:
        print(f"held:       since {when(meta.held_at)} (not attempted, not expiring)")
    if meta.delay_notified:
        print("delay notice sent")
    for job in jobs:
        print(f"job {job.id}: {job.domain} {', '.join(job.recipients)}")
        next_try = "held" if job.held else f"next {when(job.due_at)}"
        print(f"    attempts {job.attempts}, {next_try}")
        if job.last_error:
            print(f"    last error: {job.last_error}")
    return 0


async def _act(args: argparse.Namespace) -> int:
    settings = load(args)
    async with open_redis(settings) as redis:
        store = QueueStore.from_settings(redis, SystemClock(), settings)
        if args.account:
            return await _act_on_account(store, args.verb, args.account)
        if args.verb == "hold":
            changed = await store.hold(args.id)
            print(f"held {args.id}" if changed else f"{args.id} was already held")
        elif args.verb == "release":
            changed = await store.release(args.id)
            print(f"released {args.id}" if changed else f"{args.id} was not held")
        elif args.verb == "retry":
            count = await store.retry(args.id)
            print(f"{args.id}: {count} job(s) due now")
        else:
            await store.delete(args.id)
            print(f"deleted {args.id}")
    return 0


async def _act_on_account(store: QueueStore, verb: str, login: str) -> int:
    if verb == "hold":
        count = await store.hold_account(login)
        print(f"held {count} message(s) of {login}; mail it queues later is held too")
    elif verb == "release":
        if login not in await store.held_accounts() and not await store.messages_of(login):
            raise Failure(f"account {login!r} has no mail in the queue and is not held")
        count = await store.release_account(login)
        print(f"released {count} message(s) of {login}")
    elif verb == "retry":
        count = await store.retry_account(login)
        print(f"{count} message(s) of {login} due now")
    else:
        count = await store.delete_account(login)
        print(f"deleted {count} message(s) of {login}")
    return 0
