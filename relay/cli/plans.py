"""`relay plan add|list|remove` and `relay usage`: what a credential may send and has sent."""

from __future__ import annotations

import argparse
import datetime as dt

from redis.asyncio import Redis

from quota import Plan, Usage
from quota.errors import InvalidValue
from relay.accounts import AccountStore
from relay.accounts.provisioning import new_plan_id
from relay.app import open_redis, quota_store
from relay.cli.common import Failure, load, print_json, when
from relay.clock import SystemClock
from relay.submission.policy import format_wait


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    plan = commands.add_parser("plan", help="plans of a credential (their quotas add up)")
    sub = plan.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = sub.add_parser("add", help="add a plan; it applies at once")
    add.add_argument("login")
    add.add_argument("--daily", type=int, required=True, help="recipients per rolling 24 h")
    add.add_argument("--per-minute", type=int, help="recipients per minute (default: config)")
    add.add_argument("--starts", metavar="DATE", help="ISO date or time, UTC (default: now)")
    add.add_argument("--expires", metavar="DATE", help="ISO date or time, UTC (default: never)")
    add.set_defaults(handler=_add)
    listing = sub.add_parser("list", help="the plans of a credential")
    listing.add_argument("login")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_list)
    remove = sub.add_parser("remove", help="remove a plan")
    remove.add_argument("login")
    remove.add_argument("plan_id")
    remove.set_defaults(handler=_remove)

    usage = commands.add_parser("usage", help="24 h volume, quota, rate and state of a login")
    usage.add_argument("login")
    usage.add_argument("--json", action="store_true")
    usage.set_defaults(handler=_usage)


def parse_date(text: str | None, option: str) -> float | None:
    """`2026-12-01` (midnight UTC) or `2026-12-01T10:00[:00][Z|+02:00]` → epoch seconds."""
    if text is None:
        return None
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise Failure(f"{option}: not an ISO date or time: {text!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


async def _require_account(redis: Redis, login: str) -> None:
    """Unknown credential: a clear error before anything is changed."""
    await AccountStore(redis, SystemClock()).require(login)


async def _add(args: argparse.Namespace) -> int:
    settings = load(args)
    try:
        plan = Plan(
            new_plan_id(),
            daily=args.daily,
            per_minute=args.per_minute,
            starts=parse_date(args.starts, "--starts"),
            expires=parse_date(args.expires, "--expires"),
        )
    except InvalidValue as exc:
        raise Failure(str(exc)) from None
    async with open_redis(settings) as redis:
        await _require_account(redis, args.login)
        await quota_store(redis, settings).add_plan(args.login, plan)
    print(
        f"plan {plan.id} added to {args.login}: {_describe(plan, settings.quota.per_minute.count)}"
    )
    return 0


def _describe(plan: Plan, default_per_minute: int) -> str:
    per_minute = plan.per_minute or default_per_minute
    span = f"from {when(plan.starts)} " if plan.starts else ""
    span += f"until {when(plan.expires)}" if plan.expires else "no expiry"
    return f"{plan.daily}/24h, {per_minute}/min, {span}"


async def _list(args: argparse.Namespace) -> int:
    settings = load(args)
    async with open_redis(settings) as redis:
        await _require_account(redis, args.login)
        plans = await quota_store(redis, settings).plans(args.login)
    now = SystemClock().now()
    if args.json:
        print_json([p.as_dict(now) for p in plans])
        return 0
    for p in plans:
        state = "active" if p.active(now) else "inactive"
        print(f"{p.id}  {state:<8}  {_describe(p, settings.quota.per_minute.count)}")
    if not plans:
        print(f"{args.login} has no plan: it cannot send")
    return 0


async def _remove(args: argparse.Namespace) -> int:
    settings = load(args)
    async with open_redis(settings) as redis:
        await _require_account(redis, args.login)
        try:
            await quota_store(redis, settings).remove_plan(args.login, args.plan_id)
        except InvalidValue as exc:
            raise Failure(str(exc)) from None
    print(f"plan {args.plan_id} removed from {args.login}")
    return 0


async def _usage(args: argparse.Namespace) -> int:
    settings = load(args)
    async with open_redis(settings) as redis:
        await _require_account(redis, args.login)
        usage = await quota_store(redis, settings).usage(args.login, SystemClock().now())
    if args.json:
        print_json({"login": args.login, **usage.as_dict()})
    else:
        print(render_usage(args.login, usage, SystemClock().now()))
    return 0


def render_usage(login: str, usage: Usage, now: float) -> str:
    lines = [
        f"login:        {login}",
        f"state:        {usage.state}",
        f"last 24 h:    {usage.used} of {usage.daily} recipients ({usage.remaining} left)",
        f"last minute:  {usage.per_minute_used} of {usage.per_minute}",
    ]
    if usage.next_free_at is not None:
        wait = format_wait(usage.next_free_at - now)
        lines.append(f"next slot:    {when(usage.next_free_at)} (in {wait})")
    lines.append("per hour (UTC):")
    for start, count in usage.hourly:
        if count:
            hour = dt.datetime.fromtimestamp(start, dt.UTC).strftime("%m-%d %H:00")
            lines.append(f"  {hour}  {count:>7}")
    return "\n".join(lines)
