"""`relay suspension …`, `relay audit`, `relay complaint add`: operators review abuse."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from redis.asyncio import Redis

from relay.abuse import Suspension, SuspensionService
from relay.abuse.complaints import TraceStore, parse_complaint
from relay.abuse.factory import suspension_service
from relay.accounts import AccountStore
from relay.app import open_redis, quota_store
from relay.cli.common import Failure, load, print_json, when
from relay.clock import SystemClock
from relay.config import Settings
from reputation import Kind, NotAllowed


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = commands.add_parser("suspension", help="review suspensions: list, show, lift, deny")
    sub = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = sub.add_parser("list", help="suspensions, oldest first")
    listing.add_argument("--open", action="store_true", help="only those not yet reviewed")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_list)
    show = sub.add_parser("show", help="one suspension with its evidence")
    show.add_argument("id")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=_show)
    for name, handler, text in (("lift", _lift, "reinstate"), ("deny", _deny, "refuse for good")):
        action = sub.add_parser(name, help=f"{text} (audited)")
        action.add_argument("id")
        action.add_argument("--reason", required=True)
        action.add_argument("--operator", default=_whoami(), help="default: your user name")
        if name == "lift":
            action.add_argument(
                "--force", action="store_true", help="before the minimum duration (audited)"
            )
        action.set_defaults(handler=handler)
    manual = sub.add_parser("add", help="suspend a login by hand")
    manual.add_argument("login")
    manual.add_argument("--reason", required=True)
    manual.add_argument("--kind", choices=["admin", "abuse", "reputation"], default="admin")
    manual.add_argument("--operator", default=_whoami())
    manual.set_defaults(handler=_add)

    audit = commands.add_parser("audit", help="the audit log, newest last")
    audit.add_argument("--account", metavar="LOGIN")
    audit.add_argument("--limit", type=int, default=100)
    audit.add_argument("--json", action="store_true")
    audit.set_defaults(handler=_audit)

    complaint = commands.add_parser("complaint", help="spam complaints")
    csub = complaint.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = csub.add_parser("add", help="record a complaint (ARF or forwarded) and suspend")
    add.add_argument("login", nargs="?", help="default: found from the original message")
    add.add_argument("--file", required=True, help="the report (.eml); - for stdin")
    add.add_argument("--operator", default=_whoami())
    add.set_defaults(handler=_complaint)


def _whoami() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "operator"


def _service(redis: Redis, settings: Settings) -> SuspensionService:
    return suspension_service(redis, settings, SystemClock(), quota_store(redis, settings))


def _line(s: Suspension) -> str:
    return (
        f"{s.id}  {when(s.created_at)}  {s.status.value:<7} {s.account:<20} {s.kind.value:<10}"
        f" offence {s.terms.offence}  {s.reason}"
    )


async def _list(args: argparse.Namespace) -> int:
    settings = load(args)
    async with open_redis(settings) as redis:
        found = await _service(redis, settings).store.listing(open_only=args.open)
    if args.json:
        print_json([s.as_dict() for s in found])
    else:
        for s in found:
            print(_line(s))
        print(f"{len(found)} suspension(s)")
    return 0


def render(s: Suspension) -> str:
    terms = s.terms
    lift = "the user (password change) or an operator" if terms.user_may_lift else "an operator"
    lines = [
        f"id:         {s.id}",
        f"account:    {s.account}",
        f"kind:       {s.kind.value} (offence {terms.offence})",
        f"status:     {s.status.value}",
        f"since:      {when(s.created_at)} by {s.actor}",
        f"reason:     {s.reason}",
        f"lift by:    {lift}"
        + (f", not before {when(terms.not_before)}" if terms.not_before else ""),
        f"may deny:   {'yes' if terms.may_deny else 'no'}",
    ]
    if s.closed_at is not None:
        lines.append(f"closed:     {when(s.closed_at)} by {s.closed_by}: {s.close_reason}")
    lines.append("evidence:")
    lines += [f"  {k}: {v}" for k, v in s.evidence.items()]
    return "\n".join(lines)


async def _show(args: argparse.Namespace) -> int:
    settings = load(args)
    async with open_redis(settings) as redis:
        s = await _service(redis, settings).store.get(args.id)
    if args.json:
        print_json(s.as_dict())
    else:
        print(render(s))
    return 0


async def _lift(args: argparse.Namespace) -> int:
    settings = load(args)
    async with open_redis(settings) as redis:
        try:
            s = await _service(redis, settings).lift(
                args.id, actor=f"operator:{args.operator}", reason=args.reason, force=args.force
            )
        except NotAllowed as exc:
            raise Failure(f"cannot lift {args.id}: {exc}") from None
    print(f"lifted {s.id}: {s.account} can send again unless another suspension is open")
    return 0


async def _deny(args: argparse.Namespace) -> int:
    settings = load(args)
    async with open_redis(settings) as redis:
        try:
            s = await _service(redis, settings).deny(
                args.id, actor=f"operator:{args.operator}", reason=args.reason
            )
        except NotAllowed as exc:
            raise Failure(f"cannot deny {args.id}: {exc}") from None
    print(f"denied {s.id}: {s.account} is refused for good (550 5.7.1)")
    return 0


async def _add(args: argparse.Namespace) -> int:
    settings = load(args)
    async with open_redis(settings) as redis:
        await AccountStore(redis, SystemClock()).require(args.login)
        s = await _service(redis, settings).suspend(
            args.login,
            Kind(args.kind),
            args.reason,
            {"by_hand": True},
            actor=f"operator:{args.operator}",
        )
    print(f"suspension {s.id}: {s.account} ({s.kind.value}, offence {s.terms.offence})")
    return 0


async def _audit(args: argparse.Namespace) -> int:
    settings = load(args)
    async with open_redis(settings) as redis:
        entries = await _service(redis, settings).audit.entries(
            account=args.account or "", limit=args.limit
        )
    if args.json:
        print_json([e.as_dict() for e in entries])
        return 0
    for e in entries:
        about = " ".join(x for x in (e.account, e.subject) if x)
        print(f"{when(e.at)}  {e.actor:<24} {e.action:<10} {about:<30} {e.reason}")
    return 0


def _read_report(name: str) -> bytes:
    try:
        return sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
    except OSError as exc:
        raise Failure(f"cannot read {name}: {exc.strerror or exc}") from None


async def _complaint(args: argparse.Namespace) -> int:
    settings = load(args)
    report = _read_report(args.file)
    complaint = parse_complaint(report, hostname=settings.hostname)
    async with open_redis(settings) as redis:
        login = args.login
        if login is None:
            traces = TraceStore(redis)
            found = {await traces.account_of(qid) for qid in complaint.queue_ids}
            found.discard(None)
            if len(found) != 1:
                raise Failure(
                    "cannot tell which account sent the original message"
                    f" (queue ids found: {', '.join(complaint.queue_ids) or 'none'});"
                    " give the LOGIN"
                )
            login = str(found.pop())
        await AccountStore(redis, SystemClock()).require(login)
        s = await _service(redis, settings).suspend(
            login,
            Kind.ABUSE,
            f"spam complaint ({complaint.feedback_type}) from {complaint.reporter or 'unknown'}",
            complaint.as_evidence(),
            actor=f"operator:{args.operator}",
        )
    print(f"complaint recorded against {login}: suspension {s.id} (offence {s.terms.offence})")
    return 0
