"""`relay quarantine …`, `relay list …`, `relay report content`: content safety for operators.

Subjects and reasons come from customers' mail: printed through `relay.safe_text`.
"""

from __future__ import annotations

import argparse
from typing import Any

from relay.abuse.factory import suspension_service
from relay.app import open_redis, quota_store
from relay.cli.common import Failure, load, operator_actor, print_json, when
from relay.clock import SystemClock
from relay.content.desk import QuarantineDesk
from relay.content.factory import list_store, quarantine_desk
from relay.content.lists import GLOBAL, ListAction, ListEntry, ListKind
from relay.content.quarantine import Held, Quarantined
from relay.content.report import content_report
from relay.content.stats import ContentStats
from relay.safe_text import clean_line


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = commands.add_parser("quarantine", help="mail held by the content scan")
    sub = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = sub.add_parser("list", help="quarantined messages, newest first")
    listing.add_argument("--account", metavar="LOGIN", default="")
    listing.add_argument("--kind", choices=[k.value for k in Held])
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_list)
    show = sub.add_parser("show", help="one quarantined message's record")
    show.add_argument("id")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=_show)
    release = sub.add_parser(
        "release", help="deliver it through the queue (counts on the quota; audited)"
    )
    release.add_argument("id")
    release.add_argument(
        "--malware", action="store_true", help="needed to release a message carrying malware"
    )
    release.set_defaults(handler=_release)
    delete = sub.add_parser("delete", help="remove it and its body for good (audited)")
    delete.add_argument("id")
    delete.set_defaults(handler=_delete)
    sweep = sub.add_parser("sweep", help="delete what is past its retention now")
    sweep.set_defaults(handler=_sweep)
    digest = sub.add_parser("digest", help="send every account its quarantine summary now")
    digest.set_defaults(handler=_digest)

    lists = commands.add_parser("list", help="allow and deny lists (global or per account)")
    lsub = lists.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = lsub.add_parser("add", help="add or replace an entry")
    _scope(add)
    add.add_argument("verdict", choices=[a.value for a in ListAction])
    add.add_argument("kind", choices=[k.value for k in ListKind])
    add.add_argument("value", help="an address (recipient, sender) or a domain")
    add.add_argument("--reason", default="", help="given to the client with a refusal")
    add.set_defaults(handler=_list_add)
    remove = lsub.add_parser("remove", help="remove an entry")
    _scope(remove)
    remove.add_argument("kind", choices=[k.value for k in ListKind])
    remove.add_argument("value")
    remove.set_defaults(handler=_list_remove)
    shown = lsub.add_parser("show", help="entries of one scope, or of all")
    scope = shown.add_mutually_exclusive_group()
    scope.add_argument("--global", dest="is_global", action="store_true")
    scope.add_argument("--account", metavar="LOGIN")
    shown.add_argument("--json", action="store_true")
    shown.set_defaults(handler=_list_show)

    report = commands.add_parser("report", help="reports")
    rsub = report.add_subparsers(dest="action", required=True, metavar="REPORT")
    content = rsub.add_parser(
        "content", help="viruses by signature and account, spam verdicts, quarantine sizes"
    )
    content.add_argument("--json", action="store_true")
    content.set_defaults(handler=_report)


def _scope(parser: argparse.ArgumentParser) -> None:
    scope = parser.add_mutually_exclusive_group(required=True)
    scope.add_argument("--global", dest="is_global", action="store_true")
    scope.add_argument("--account", metavar="LOGIN")


def _account_of(args: argparse.Namespace) -> str:
    return GLOBAL if args.is_global else str(args.account)


def _line(q: Quarantined) -> str:
    to = ",".join(q.recipients[:3]) + ("…" if len(q.recipients) > 3 else "")
    return clean_line(
        f"{q.id}  {when(q.created_at)}  {q.kind.value:7}  {q.account}  {q.size} B"
        f"  {q.reason}  to {to}  subject: {q.subject or '-'}"
    )


async def _list(args: argparse.Namespace) -> int:
    settings = load(args)
    async with open_redis(settings) as redis:
        desk = _desk(redis, settings)
        kind = Held(args.kind) if args.kind else None
        held = await desk.store.listing(account=args.account, kind=kind)
    if args.json:
        print_json([q.as_dict() for q in held])
        return 0
    for q in held:
        print(_line(q))
    print(f"{len(held)} message(s) in quarantine")
    return 0


async def _show(args: argparse.Namespace) -> int:
    settings = load(args)
    async with open_redis(settings) as redis:
        record = await _desk(redis, settings).store.get(args.id)
    if args.json:
        print_json(record.as_dict())
        return 0
    for key, value in record.as_dict().items():
        if key in ("created_at", "expires_at"):
            value = when(value)
        print(clean_line(f"{key}: {value}"))
    return 0


async def _release(args: argparse.Namespace) -> int:
    settings = load(args)
    async with open_redis(settings) as redis:
        desk = _desk(redis, settings)
        record = await desk.store.get(args.id)
        if record.kind is Held.MALWARE and not args.malware:
            raise Failure(
                f"{args.id} carries malware ({clean_line(record.reason)}): add --malware to"
                " release it anyway"
            )
        queue_id = await desk.release(args.id, actor=operator_actor(), operator=True)
    print(f"released {args.id}: queued as {queue_id}")
    return 0


async def _delete(args: argparse.Namespace) -> int:
    settings = load(args)
    async with open_redis(settings) as redis:
        await _desk(redis, settings).delete(args.id, actor=operator_actor())
    print(f"deleted {args.id}")
    return 0


async def _sweep(args: argparse.Namespace) -> int:
    settings = load(args)
    async with open_redis(settings) as redis:
        removed = await _desk(redis, settings).sweep()
    print(f"{removed} expired message(s) deleted")
    return 0


async def _digest(args: argparse.Namespace) -> int:
    settings = load(args)
    async with open_redis(settings) as redis:
        sent = await _desk(redis, settings).send_digests(settings.reputation.support)
    print(f"{sent} digest(s) queued")
    return 0


def _desk(redis: Any, settings: Any) -> QuarantineDesk:
    clock = SystemClock()
    quota = quota_store(redis, settings)
    return quarantine_desk(
        redis, settings, clock, quota, suspension_service(redis, settings, clock, quota)
    )


async def _list_add(args: argparse.Namespace) -> int:
    settings = load(args)
    async with open_redis(settings) as redis:
        entry = await list_store(redis, settings, SystemClock()).add(
            _account_of(args),
            ListKind(args.kind),
            args.value,
            ListAction(args.verdict),
            args.reason,
            operator_actor(),
        )
    print(clean_line(f"{entry.scope}: {entry.action.value} {entry.kind.value} {entry.value}"))
    return 0


async def _list_remove(args: argparse.Namespace) -> int:
    settings = load(args)
    async with open_redis(settings) as redis:
        removed = await list_store(redis, settings, SystemClock()).remove(
            _account_of(args), ListKind(args.kind), args.value
        )
    if not removed:
        raise Failure(f"no {args.kind} entry {clean_line(args.value)!r} in that list")
    print(f"removed {args.kind} {clean_line(args.value)}")
    return 0


async def _list_show(args: argparse.Namespace) -> int:
    settings = load(args)
    account: str | None = GLOBAL if args.is_global else args.account
    async with open_redis(settings) as redis:
        entries = await list_store(redis, settings, SystemClock()).show(account)
    if args.json:
        print_json([e.as_dict() for e in entries])
        return 0
    for e in entries:
        print(_entry_line(e))
    print(f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}")
    return 0


def _entry_line(e: ListEntry) -> str:
    return clean_line(
        f"{e.scope:20}  {e.action.value:5}  {e.kind.value:9}  {e.value}"
        f"  {e.reason or '-'}  ({e.actor}, {when(e.at)})"
    )


async def _report(args: argparse.Namespace) -> int:
    settings = load(args)
    async with open_redis(settings) as redis:
        report = await content_report(ContentStats(redis), _desk(redis, settings).store)
    if args.json:
        print_json(report)
        return 0
    print("Viruses by signature:")
    for signature, row in report["viruses"].items():
        accounts = ", ".join(f"{a} {n}" for a, n in sorted(row["accounts"].items()))
        print(clean_line(f"  {signature}: {row['total']} ({accounts})"))
    print("Spam verdicts by account:")
    for account, actions in report["spam"].items():
        print(
            clean_line(f"  {account}: " + ", ".join(f"{a} {n}" for a, n in sorted(actions.items())))
        )
    print("Quarantine:")
    for kind, row in report["quarantine"]["by_kind"].items():
        print(f"  {kind}: {row['messages']} message(s), {row['bytes']} bytes")
    for scanner, failures in report["scanner_failures"].items():
        print(
            f"Scanner {scanner} without a verdict: "
            + ", ".join(f"{w} {n}" for w, n in failures.items())
        )
    return 0
