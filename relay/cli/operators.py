"""`relay operator add|list|passwd|token|remove`: accounts of the web console and the API."""

from __future__ import annotations

import argparse

from relay.abuse.audit import AuditLog
from relay.accounts.passwords import generate_password
from relay.app import open_redis
from relay.cli.common import load, operator_actor, print_json, read_password, when
from relay.clock import SystemClock
from relay.web.auth import OperatorStore, Role


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    operator = commands.add_parser("operator", help="operators of the web console and the API")
    sub = operator.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = sub.add_parser("add", help="create an operator (prints a generated password)")
    add.add_argument("name")
    add.add_argument("--role", choices=[r.value for r in Role], default=Role.VIEWER.value)
    add.add_argument("--password-stdin", action="store_true")
    add.set_defaults(handler=_add)
    listing = sub.add_parser("list", help="operators and their roles")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_list)
    passwd = sub.add_parser("passwd", help="set a new password (generated if none given)")
    passwd.add_argument("name")
    passwd.add_argument("--password-stdin", action="store_true")
    passwd.set_defaults(handler=_passwd)
    token = sub.add_parser("token", help="a new bearer token for scripts (shown once)")
    token.add_argument("name")
    token.set_defaults(handler=_token)
    remove = sub.add_parser("remove", help="delete an operator and revoke their tokens")
    remove.add_argument("name")
    remove.set_defaults(handler=_remove)


async def _audit(redis: object, action: str, name: str, reason: str = "") -> None:
    await AuditLog(redis, SystemClock()).append(  # type: ignore[arg-type]
        actor=operator_actor(), action=action, subject=f"operator:{name}", reason=reason
    )


async def _add(args: argparse.Namespace) -> int:
    settings = load(args)
    password = read_password(args.password_stdin)
    generated = password is None
    password = password or generate_password()
    async with open_redis(settings) as redis:
        op = await OperatorStore(redis).add(
            args.name, password, Role(args.role), SystemClock().now()
        )
        await _audit(redis, "operator-add", op.name, f"role {op.role.value}")
    print(f"created operator {op.name} ({op.role.value})")
    if generated:
        print(f"password: {password}")
    return 0


async def _list(args: argparse.Namespace) -> int:
    async with open_redis(load(args)) as redis:
        found = await OperatorStore(redis).list()
    if args.json:
        print_json([o.as_dict() for o in found])
        return 0
    for o in found:
        print(f"{o.name:<32} {o.role.value:<8} {when(o.created_at)}")
    return 0


async def _passwd(args: argparse.Namespace) -> int:
    settings = load(args)
    password = read_password(args.password_stdin, prompt="New password: ")
    generated = password is None
    password = password or generate_password()
    async with open_redis(settings) as redis:
        await OperatorStore(redis).set_password(args.name, password)
        await _audit(redis, "operator-passwd", args.name)
    print(f"password changed for operator {args.name}")
    if generated:
        print(f"password: {password}")
    return 0


async def _token(args: argparse.Namespace) -> int:
    async with open_redis(load(args)) as redis:
        token = await OperatorStore(redis).new_token(args.name)
        await _audit(redis, "operator-token", args.name)
    print(token)
    return 0


async def _remove(args: argparse.Namespace) -> int:
    async with open_redis(load(args)) as redis:
        await OperatorStore(redis).remove(args.name)
        await _audit(redis, "operator-remove", args.name)
    print(f"removed operator {args.name}; their tokens are revoked")
    return 0
