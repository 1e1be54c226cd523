"""`relay apikey|suppression|webhook|events`: what applications use, seen and set by operators."""

from __future__ import annotations

import argparse
import json

import httpx
from redis.asyncio import Redis

from relay.abuse.audit import AuditLog
from relay.accounts import AccountStore
from relay.accounts.api_keys import ApiKeys
from relay.address import is_mailbox
from relay.app import open_redis
from relay.cli.common import Failure, load, operator_actor, print_json, when
from relay.clock import SystemClock
from relay.config import Settings
from relay.events import Event, EventStream, SuppressionList, WebhookStore
from relay.events.dispatcher import payload, post_event
from relay.events.webhooks import parse_kinds, register
from relay.safe_text import clean_line


def register_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _apikey(commands)
    _suppression(commands)
    _webhook(commands)
    events = commands.add_parser("events", help="a credential's delivery events, oldest first")
    events.add_argument("login")
    events.add_argument("--since", default="", metavar="EVENT_ID", help="after this event")
    events.add_argument("--message", metavar="QUEUE_ID", help="the events of one message")
    events.add_argument("--limit", type=int, default=100)
    events.add_argument("--json", action="store_true")
    events.set_defaults(handler=_events)


def _apikey(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("apikey", help="API keys of a credential (HTTP send API)")
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = sub.add_parser("add", help="a new key, printed once (only its hash is kept)")
    add.add_argument("login")
    add.add_argument("--note", default="", help="what the key is for (shown in list)")
    add.set_defaults(handler=_apikey_add)
    listing = sub.add_parser("list", help="the keys of a credential (never the keys themselves)")
    listing.add_argument("login")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_apikey_list)
    revoke = sub.add_parser("revoke", help="end a key at once")
    revoke.add_argument("login")
    revoke.add_argument("key_id")
    revoke.set_defaults(handler=_apikey_revoke)


def _suppression(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("suppression", help="addresses a credential no longer sends to")
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = sub.add_parser("list", help="the suppressed addresses, oldest first")
    listing.add_argument("login")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_suppression_list)
    add = sub.add_parser("add", help="suppress an address")
    add.add_argument("login")
    add.add_argument("address")
    add.add_argument("--reason", default="added by an operator")
    add.set_defaults(handler=_suppression_add)
    remove = sub.add_parser("remove", help="allow an address again")
    remove.add_argument("login")
    remove.add_argument("address")
    remove.set_defaults(handler=_suppression_remove)


def _webhook(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("webhook", help="webhooks of a credential (signed event POSTs)")
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = sub.add_parser("list", help="the webhooks of a credential, with their progress")
    listing.add_argument("login")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_webhook_list)
    add = sub.add_parser("add", help="post events to URL; prints the signing secret once")
    add.add_argument("login")
    add.add_argument("url")
    add.add_argument(
        "--events", default="all", metavar="KINDS", help="comma-separated kinds (default: all)"
    )
    add.set_defaults(handler=_webhook_add)
    remove = sub.add_parser("remove", help="stop posting to a webhook")
    remove.add_argument("login")
    remove.add_argument("webhook_id")
    remove.set_defaults(handler=_webhook_remove)
    test = sub.add_parser("test", help="post a signed `test` event now and show the answer")
    test.add_argument("login")
    test.add_argument("webhook_id")
    test.set_defaults(handler=_webhook_test)
    log = sub.add_parser("log", help="the latest attempts of a webhook, newest first")
    log.add_argument("login")
    log.add_argument("webhook_id")
    log.add_argument("--limit", type=int, default=20)
    log.add_argument("--json", action="store_true")
    log.set_defaults(handler=_webhook_log)


async def _require(redis: Redis, login: str) -> None:
    await AccountStore(redis, SystemClock()).require(login)


async def _audit(redis: Redis, action: str, login: str, subject: str, reason: str = "") -> None:
    await AuditLog(redis, SystemClock()).append(
        actor=operator_actor(), action=action, account=login, subject=subject, reason=reason
    )


def _stream(redis: Redis, settings: Settings) -> EventStream:
    return EventStream(redis, SystemClock(), retention=settings.events.retention.seconds)


async def _apikey_add(args: argparse.Namespace) -> int:
    async with open_redis(load(args)) as redis:
        await _require(redis, args.login)
        record, key = await ApiKeys(redis, SystemClock()).add(args.login, clean_line(args.note))
        await _audit(redis, "apikey-add", args.login, record.id, record.note)
    print(f"API key {record.id} for {args.login} (scope: {record.scope}); shown only now:")
    print(key)
    return 0


async def _apikey_list(args: argparse.Namespace) -> int:
    async with open_redis(load(args)) as redis:
        await _require(redis, args.login)
        keys = await ApiKeys(redis, SystemClock()).list(args.login)
    if args.json:
        print_json([k.as_dict() for k in keys])
        return 0
    if not keys:
        print(f"no API keys for {args.login}")
    for k in keys:
        state = f"revoked {when(k.revoked_at)}" if k.revoked_at else "active"
        print(f"{k.id}  created {when(k.created_at)}  {k.scope}  {state}  {k.note}".rstrip())
    return 0


async def _apikey_revoke(args: argparse.Namespace) -> int:
    async with open_redis(load(args)) as redis:
        await _require(redis, args.login)
        record = await ApiKeys(redis, SystemClock()).revoke(args.login, args.key_id)
        await _audit(redis, "apikey-revoke", args.login, record.id)
    print(f"API key {record.id} of {args.login} revoked")
    return 0


async def _suppression_list(args: argparse.Namespace) -> int:
    async with open_redis(load(args)) as redis:
        await _require(redis, args.login)
        entries = await SuppressionList(redis, SystemClock()).list(args.login)
    if args.json:
        print_json([e.as_dict() for e in entries])
        return 0
    if not entries:
        print(f"no suppressed addresses for {args.login}")
    for e in entries:
        print(clean_line(f"{e.address}  since {when(e.at)}  {e.source}: {e.reason}"))
    return 0


async def _suppression_add(args: argparse.Namespace) -> int:
    if not is_mailbox(args.address):
        raise Failure(f"not an address: {args.address!r}")
    reason = clean_line(args.reason)
    async with open_redis(load(args)) as redis:
        await _require(redis, args.login)
        entry, new = await SuppressionList(redis, SystemClock()).add(
            args.login, args.address, reason=reason, source=operator_actor()
        )
        if new:
            await _audit(redis, "suppression-add", args.login, entry.address, reason)
    if new:
        print(f"{entry.address} suppressed for {args.login}")
    else:
        print(f"{entry.address} was already suppressed since {when(entry.at)}: {entry.reason}")
    return 0


async def _suppression_remove(args: argparse.Namespace) -> int:
    async with open_redis(load(args)) as redis:
        await _require(redis, args.login)
        if not await SuppressionList(redis, SystemClock()).remove(args.login, args.address):
            raise Failure(f"{args.address} is not on the suppression list of {args.login}")
        await _audit(redis, "suppression-remove", args.login, args.address.lower())
    print(f"{args.address.lower()} removed from the suppression list of {args.login}")
    return 0


async def _webhook_list(args: argparse.Namespace) -> int:
    async with open_redis(load(args)) as redis:
        await _require(redis, args.login)
        store = WebhookStore(redis, SystemClock())
        hooks = [(h, await store.progress(h)) for h in await store.of_account(args.login)]
    if args.json:
        print_json(
            [h.as_dict() | {"cursor": p.cursor, "failing_since": p.failing_since} for h, p in hooks]
        )
        return 0
    if not hooks:
        print(f"no webhooks for {args.login}")
    for hook, progress in hooks:
        print(f"{hook.id}  {hook.url}  {','.join(hook.kinds)}")
        state = f"    after event {progress.cursor or '(none yet)'}"
        if progress.failing_since is not None:
            state += (
                f"; failing since {when(progress.failing_since)} ({progress.attempts} attempts),"
                f" next at {when(progress.next_at)}"
            )
        print(state)
    return 0


async def _webhook_add(args: argparse.Namespace) -> int:
    settings = load(args)
    kinds = parse_kinds(args.events)
    async with open_redis(settings) as redis:
        await _require(redis, args.login)
        hook = await register(
            WebhookStore(redis, SystemClock()),
            _stream(redis, settings),
            args.login,
            args.url,
            kinds,
            allow_private=settings.webhooks.allow_private_targets,
        )
        await _audit(redis, "webhook-add", args.login, hook.id, hook.url)
    print(f"webhook {hook.id} for {args.login}: {hook.url} ({','.join(kinds)})")
    print("signing secret, shown only now (verify Relay-Signature with it):")
    print(hook.secret)
    return 0


async def _webhook_remove(args: argparse.Namespace) -> int:
    async with open_redis(load(args)) as redis:
        await WebhookStore(redis, SystemClock()).remove(args.login, args.webhook_id)
        await _audit(redis, "webhook-remove", args.login, args.webhook_id)
    print(f"webhook {args.webhook_id} of {args.login} removed")
    return 0


async def _webhook_test(args: argparse.Namespace) -> int:
    settings = load(args)
    clock = SystemClock()
    async with open_redis(settings) as redis:
        hook = await WebhookStore(redis, clock).get(args.login, args.webhook_id)
    now = clock.now()
    event = Event(f"test-{int(now * 1000)}", args.login, "test", "", "", now, {})
    async with httpx.AsyncClient(
        timeout=settings.webhooks.timeout.seconds, follow_redirects=False, trust_env=False
    ) as client:
        result = await post_event(
            client,
            hook,
            event.id,
            payload(event),
            allow_private=settings.webhooks.allow_private_targets,
            now=now,
        )
    if not result.ok:
        raise Failure(f"webhook {hook.id} ({hook.url}): {result.error}")
    print(f"webhook {hook.id} answered HTTP {result.status} in {result.seconds:.3f}s")
    return 0


async def _webhook_log(args: argparse.Namespace) -> int:
    async with open_redis(load(args)) as redis:
        entries = await WebhookStore(redis, SystemClock()).log(
            args.login, args.webhook_id, args.limit
        )
    if args.json:
        print_json(entries)
        return 0
    if not entries:
        print(f"no attempts logged for webhook {args.webhook_id}")
    for e in entries:
        outcome = f"HTTP {e['status']}" if e["status"] is not None else "no answer"
        shown = "ok" if e["ok"] else f"failed: {e['error']}"
        line = (
            f"{when(float(str(e['at'])))}  event {e['event']} ({e['kind']}) attempt"
            f" {e['attempt']}  {outcome}  {shown}"
        )
        print(clean_line(line))
    return 0


async def _events(args: argparse.Namespace) -> int:
    settings = load(args)
    async with open_redis(settings) as redis:
        await _require(redis, args.login)
        stream = _stream(redis, settings)
        if args.message:
            events = await stream.of_message(args.login, args.message)
        else:
            events = await stream.since(args.login, args.since, args.limit)
    if args.json:
        print_json([e.as_dict() for e in events])
        return 0
    if not events:
        print(f"no events for {args.login}")
    for e in events:
        details = " ".join(f"{k}={json.dumps(v)}" for k, v in e.data.items())
        print(
            clean_line(
                f"{e.id}  {when(e.at)}  {e.kind:<12} {e.message_id}  {e.recipient}  {details}"
            )
        )
    return 0
