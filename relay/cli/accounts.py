"""`relay account add|list|show|passwd|remove`."""

from __future__ import annotations

import argparse

from relay.abuse.factory import suspension_service
from relay.accounts import Account, AccountStore
from relay.accounts.api_keys import ApiKeys
from relay.accounts.passwords import generate_password
from relay.accounts.provisioning import create_account, remove_account
from relay.app import open_redis, quota_store
from relay.cli.common import Failure, load, print_json, read_password, when
from relay.clock import SystemClock
from relay.events import WebhookStore
from relay.safe_text import clean_line
from relay.sender_auth import DkimKeyStore, IdentityStore


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    account = commands.add_parser("account", help="manage SMTP credentials")
    sub = account.add_subparsers(dest="action", required=True, metavar="ACTION")

    add = sub.add_parser("add", help="create a login (prints a generated password if none given)")
    add.add_argument("login")
    add.add_argument("--password-stdin", action="store_true", help="read the password on stdin")
    add.add_argument("--email", default="", help="contact address for notices")
    add.add_argument(
        "--daily", type=int, help="first plan's daily quota (default: quota.new_account_daily)"
    )
    add.set_defaults(handler=_add)

    listing = sub.add_parser("list", help="list logins")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_list)

    show = sub.add_parser("show", help="show one login")
    show.add_argument("login")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=_show)

    passwd = sub.add_parser("passwd", help="set a new password (generated if none given)")
    passwd.add_argument("login")
    passwd.add_argument("--password-stdin", action="store_true")
    passwd.set_defaults(handler=_passwd)

    history = sub.add_parser("history", help="suspensions and audit log of a login")
    history.add_argument("login")
    history.add_argument("--json", action="store_true")
    history.set_defaults(handler=_history)

    remove = sub.add_parser("remove", help="delete a login")
    remove.add_argument("login")
    remove.set_defaults(handler=_remove)


async def _add(args: argparse.Namespace) -> int:
    settings = load(args)
    password = read_password(args.password_stdin)
    generated = password is None
    password = password or generate_password()
    daily = settings.quota.new_account_daily if args.daily is None else args.daily
    if daily < 0:
        raise Failure(f"--daily must not be negative: {daily}")
    async with open_redis(settings) as redis:
        account, plan = await create_account(
            AccountStore(redis, SystemClock()),
            quota_store(redis, settings),
            login=args.login,
            password=password,
            email=args.email,
            daily=daily,
        )
    print(f"created account {account.login}")
    if plan is None:
        print("no plan: add one with `relay plan add` before it can send")
    else:
        print(f"plan {plan.id}: {plan.daily} recipients per rolling 24 h")
    if generated:
        print(f"password: {password}")
    return 0


async def _list(args: argparse.Namespace) -> int:
    async with open_redis(load(args)) as redis:
        accounts = await AccountStore(redis, SystemClock()).list()
    if args.json:
        print_json([a.as_dict() for a in accounts])
    else:
        for account in accounts:
            print(_line(account))
    return 0


async def _show(args: argparse.Namespace) -> int:
    async with open_redis(load(args)) as redis:
        account = await AccountStore(redis, SystemClock()).require(args.login)
    if args.json:
        print_json(account.as_dict())
    else:
        print(f"login:    {account.login}")
        print(f"email:    {account.email or '-'}")
        print(f"created:  {when(account.created_at)}")
    return 0


async def _passwd(args: argparse.Namespace) -> int:
    settings = load(args)
    password = read_password(args.password_stdin, prompt="New password: ")
    generated = password is None
    password = password or generate_password()
    async with open_redis(settings) as redis:
        await AccountStore(redis, SystemClock()).set_password(args.login, password)
        quota = quota_store(redis, settings)
        lifted = await suspension_service(redis, settings, SystemClock(), quota).password_changed(
            args.login
        )
    print(f"password changed for {args.login}")
    for s in lifted:
        print(f"suspension {s.id} lifted: a first offence ends with a password change")
    if generated:
        print(f"password: {password}")
    return 0


async def _remove(args: argparse.Namespace) -> int:
    settings = load(args)
    async with open_redis(settings) as redis:
        await remove_account(
            AccountStore(redis, SystemClock()), quota_store(redis, settings), args.login
        )
        # Its domains become free for another account; its DKIM keys must not sign for it.
        identities = await IdentityStore(redis, SystemClock()).forget(args.login)
        keys = await DkimKeyStore.from_settings(redis, settings.sender_auth).remove_owned(
            args.login
        )
        # Its API keys must not authenticate a later account of the same login.
        await ApiKeys(redis, SystemClock()).remove_all(args.login)
        await WebhookStore(redis, SystemClock()).remove_all(args.login)
    print(f"removed account {args.login}")
    if identities:
        print(f"released sender identities: {', '.join(i.name for i in identities)}")
    for domain in keys:
        print(f"DKIM key of {domain} removed; remove its DNS record")
    return 0


async def _history(args: argparse.Namespace) -> int:
    settings = load(args)
    async with open_redis(settings) as redis:
        await AccountStore(redis, SystemClock()).require(args.login)
        service = suspension_service(redis, settings, SystemClock(), quota_store(redis, settings))
        suspensions = await service.store.of_account(args.login)
        entries = await service.audit.entries(account=args.login, limit=1000)
    if args.json:
        print_json(
            {
                "suspensions": [x.as_dict() for x in suspensions],
                "audit": [e.as_dict() for e in entries],
            }
        )
        return 0
    print(f"{args.login}: {len(suspensions)} suspension(s)")
    for x in suspensions:  # reasons may quote a complaint or a DNS answer: cleaned to print
        print(
            "  "
            + clean_line(
                f"{x.id}  {when(x.created_at)}  {x.kind.value:<10} offence {x.terms.offence}"
                f"  {x.status.value:<7} {x.reason}"
            )
        )
    print("audit:")
    for e in entries:
        print(
            "  "
            + clean_line(f"{when(e.at)}  {e.actor:<24} {e.action:<10} {e.subject:<12} {e.reason}")
        )
    return 0


def _line(account: Account) -> str:
    return f"{account.login:<32} {account.email or '-':<32} {when(account.created_at)}"
