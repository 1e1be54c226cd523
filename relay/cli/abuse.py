"""`relay suspension …`, `relay audit`, `relay complaint …`: operators review abuse.

Everything printed here may hold text from outside (a complaint's headers, a DNS TXT reason):
it goes through `relay.safe_text` on the way to the terminal.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from relay.abuse import Suspension, SuspensionService
from relay.abuse.complaints import parse_complaint
from relay.abuse.factory import complaint_desk, suspension_service
from relay.abuse.review import Review
from relay.accounts import AccountStore
from relay.app import open_redis, quota_store
from relay.cli.common import (
    Failure,
    load,
    operator_actor,
    print_json,
    refuse_option,
    until,
    when,
)
from relay.clock import SystemClock
from relay.config import Settings
from relay.safe_text import clean_block, clean_line
from reputation import Kind, NotAllowed

_NO_OPERATOR = (
    "is no longer accepted: the audit log records the OS user running the command"
    f" ({operator_actor()})"
)


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
        refuse_option(action, "--operator", _NO_OPERATOR)
        if name == "lift":
            action.add_argument(
                "--force", action="store_true", help="before the minimum duration (audited)"
            )
        action.set_defaults(handler=handler)
    manual = sub.add_parser("add", help="suspend a login by hand")
    manual.add_argument("login")
    manual.add_argument("--reason", required=True)
    manual.add_argument("--kind", choices=["admin", "abuse", "reputation"], default="admin")
    refuse_option(manual, "--operator", _NO_OPERATOR)
    manual.set_defaults(handler=_add)

    audit = commands.add_parser("audit", help="the audit log, newest last")
    audit.add_argument("--account", metavar="LOGIN")
    audit.add_argument("--limit", type=int, default=100)
    audit.add_argument("--json", action="store_true")
    audit.set_defaults(handler=_audit)

    complaint = commands.add_parser("complaint", help="spam complaints and their review")
    csub = complaint.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = csub.add_parser(
        "add", help="record a complaint (ARF or forwarded): suspend, or queue for review"
    )
    add.add_argument("login", nargs="?", help="default: traced from the original message")
    add.add_argument("--file", required=True, help="the report (.eml); - for stdin")
    refuse_option(add, "--operator", _NO_OPERATOR)
    add.set_defaults(handler=_complaint)
    pending = csub.add_parser("list", help="complaints awaiting review, oldest first")
    pending.add_argument("--all", action="store_true", help="the reviewed ones too")
    pending.add_argument("--json", action="store_true")
    pending.set_defaults(handler=_complaint_list)
    one = csub.add_parser("show", help="one complaint under review with its evidence")
    one.add_argument("id")
    one.add_argument("--json", action="store_true")
    one.set_defaults(handler=_complaint_show)
    assign = csub.add_parser("assign", help="it is this login's complaint: suspend (audited)")
    assign.add_argument("id")
    assign.add_argument("login")
    assign.add_argument("--reason", required=True, help="why this account (audited)")
    assign.set_defaults(handler=_complaint_assign)
    dismiss = csub.add_parser("dismiss", help="it is no account's complaint (audited)")
    dismiss.add_argument("id")
    dismiss.add_argument("--reason", required=True)
    dismiss.set_defaults(handler=_complaint_dismiss)


def _service(redis: Redis, settings: Settings) -> SuspensionService:
    return suspension_service(redis, settings, SystemClock(), quota_store(redis, settings))


def _line(s: Suspension) -> str:
    return clean_line(
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


def _evidence(evidence: dict[str, Any]) -> list[str]:
    """Evidence as indented lines; a multi-line value (headers) below its name."""
    lines = []
    for key, value in evidence.items():
        if isinstance(value, str) and "\n" in value.strip():
            lines.append(f"  {clean_line(str(key))}:")
            lines += [f"    {line}" for line in clean_block(value.strip()).split("\n")]
        else:
            lines.append(clean_line(f"  {key}: {evidence_text(value)}"))
    return lines


def evidence_text(value: object) -> str:
    """A value of the evidence as an operator reads it, not as Python writes it: `yes`, not
    `True`; `a, b`, not `['a', 'b']`; `zone=zen, code=127.0.0.2`, not a dict."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "-"
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(evidence_text(v) for v in value) or "none"
    if isinstance(value, dict):
        return ", ".join(f"{k}={evidence_text(v)}" for k, v in value.items()) or "none"
    return str(value)


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
    lines = [clean_line(line) for line in lines]
    lines.append("evidence:")
    lines += _evidence(s.evidence)
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


def lift_refusal(sid: str, refused: NotAllowed, now: float) -> str:
    """Why a lift was refused, with the time as the CLI writes times and the way past a
    minimum term (an operator's `--force`, audited)."""
    if refused.not_before is None:
        return f"cannot lift {sid}: {refused}"
    return (
        f"cannot lift {sid}: {refused} (in {until(refused.not_before, now)}); to lift it"
        f" earlier: relay suspension lift {sid} --force --reason TEXT (audited)"
    )


async def _lift(args: argparse.Namespace) -> int:
    settings = load(args)
    async with open_redis(settings) as redis:
        try:
            s = await _service(redis, settings).lift(
                args.id, actor=operator_actor(), reason=args.reason, force=args.force
            )
        except NotAllowed as exc:
            raise Failure(lift_refusal(args.id, exc, SystemClock().now())) from None
    print(f"lifted {s.id}: {s.account} can send again unless another suspension is open")
    return 0


async def _deny(args: argparse.Namespace) -> int:
    settings = load(args)
    async with open_redis(settings) as redis:
        try:
            s = await _service(redis, settings).deny(
                args.id, actor=operator_actor(), reason=args.reason
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
            args.login, Kind(args.kind), args.reason, {"by_hand": True}, actor=operator_actor()
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
        print(clean_line(f"{when(e.at)}  {e.actor:<24} {e.action:<10} {about:<30} {e.reason}"))
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
    actor = operator_actor()
    async with open_redis(settings) as redis:
        desk = complaint_desk(redis, settings, SystemClock(), quota_store(redis, settings))
        if args.login is not None:
            await AccountStore(redis, SystemClock()).require(args.login)
            outcome: Suspension | Review = await desk.against(
                args.login, complaint, actor=actor, extra={"attributed": "operator"}
            )
        else:
            outcome = await desk.receive(complaint, actor=actor)
    if isinstance(outcome, Review):
        print(clean_line(f"complaint {outcome.id} queued for review: {outcome.problem}"))
        print(
            f"see `relay complaint show {outcome.id}`, then `relay complaint assign"
            f" {outcome.id} LOGIN --reason …` or `relay complaint dismiss {outcome.id} --reason …`"
        )
        return 0
    print(
        f"complaint recorded against {outcome.account}: suspension {outcome.id}"
        f" (offence {outcome.terms.offence})"
    )
    return 0


def _review_line(r: Review) -> str:
    reporter = r.evidence.get("reporter") or "unknown"
    return clean_line(
        f"{r.id}  {when(r.created_at)}  {r.status:<9} {r.account or '-':<20}"
        f" from {reporter}: {r.problem}"
    )


def render_review(r: Review) -> str:
    lines = [
        f"id:         {r.id}",
        f"status:     {r.status}",
        f"received:   {when(r.created_at)} by {r.actor}",
        f"problem:    {r.problem}",
        f"traced to:  {r.traced_to or '-'} (the queue id's account: a hint, not proof)",
    ]
    if r.closed_at is not None:
        to = f" to {r.account} (suspension {r.suspension})" if r.status == "assigned" else ""
        lines.append(f"closed:     {when(r.closed_at)} by {r.closed_by}{to}: {r.close_reason}")
    lines = [clean_line(line) for line in lines]
    lines.append("evidence:")
    lines += _evidence(r.evidence)
    return "\n".join(lines)


async def _complaint_list(args: argparse.Namespace) -> int:
    settings = load(args)
    async with open_redis(settings) as redis:
        desk = complaint_desk(redis, settings, SystemClock(), quota_store(redis, settings))
        found = await desk.reviews.listing(open_only=not args.all)
    if args.json:
        print_json([r.as_dict() for r in found])
        return 0
    for r in found:
        print(_review_line(r))
    print(f"{len(found)} complaint(s)" + ("" if args.all else " awaiting review"))
    return 0


async def _complaint_show(args: argparse.Namespace) -> int:
    settings = load(args)
    async with open_redis(settings) as redis:
        desk = complaint_desk(redis, settings, SystemClock(), quota_store(redis, settings))
        review = await desk.reviews.get(args.id)
    if args.json:
        print_json(review.as_dict())
    else:
        print(render_review(review))
    return 0


async def _complaint_assign(args: argparse.Namespace) -> int:
    settings = load(args)
    async with open_redis(settings) as redis:
        desk = complaint_desk(redis, settings, SystemClock(), quota_store(redis, settings))
        review, s = await desk.assign(
            args.id, args.login, actor=operator_actor(), reason=args.reason
        )
    print(
        f"complaint {review.id} assigned to {s.account}: suspension {s.id}"
        f" (offence {s.terms.offence})"
    )
    return 0


async def _complaint_dismiss(args: argparse.Namespace) -> int:
    settings = load(args)
    async with open_redis(settings) as redis:
        desk = complaint_desk(redis, settings, SystemClock(), quota_store(redis, settings))
        review = await desk.dismiss(args.id, actor=operator_actor(), reason=args.reason)
    print(f"complaint {review.id} dismissed")
    return 0
