"""`relay domain add|verify|list|remove`: the sender identities of an account.

Every change is written to the audit log with the operator (the OS user running the
command: an identity is a security decision, so it is not taken from a flag).
"""

from __future__ import annotations

import argparse

import redis.asyncio as aioredis

from relay.abuse.audit import AuditLog
from relay.accounts import AccountStore
from relay.app import open_redis
from relay.cli.common import load, operator_actor, print_json, when
from relay.clock import SystemClock
from relay.config import Settings
from relay.delivery.mx import make_resolver
from relay.sender_auth import DkimKeyStore, Identity, IdentityStore
from relay.sender_auth.identities import (
    domain_part,
    normalise_identity,
    token_name,
    token_value,
    verify_by_dns,
)
from reputation.dkim import dns_record

__all__ = ["register"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = commands.add_parser(
        "domain", help="sender identities: the domains and addresses an account may send from"
    )
    sub = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = sub.add_parser("add", help="claim a domain or address; prints the DNS token")
    add.add_argument("login")
    add.add_argument("name", metavar="DOMAIN_OR_ADDRESS")
    add.add_argument(
        "--verified",
        action="store_true",
        help="verified on the operator's word, without DNS (our own domains, dev; audited)",
    )
    add.set_defaults(handler=_add)
    verify = sub.add_parser("verify", help="look the DNS token up; verified when found")
    verify.add_argument("login")
    verify.add_argument("name", metavar="DOMAIN_OR_ADDRESS")
    verify.set_defaults(handler=_verify)
    listing = sub.add_parser("list", help="identities of one account, or of all")
    listing.add_argument("login", nargs="?")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_list)
    remove = sub.add_parser("remove", help="the account may no longer send from it (audited)")
    remove.add_argument("login")
    remove.add_argument("name", metavar="DOMAIN_OR_ADDRESS")
    remove.set_defaults(handler=_remove)


async def _add(args: argparse.Namespace) -> int:
    settings = load(args)
    clock = SystemClock()
    async with open_redis(settings) as redis:
        await AccountStore(redis, clock).require(args.login)
        store = IdentityStore(redis, clock)
        audit = AuditLog(redis, clock)
        if args.verified:
            before = await store.get(args.login, normalise_identity(args.name))
            identity = await store.mark_verified(args.login, args.name, "operator")
            if before is None or not before.verified:
                reason = "operator assertion (--verified)"
                await _audited(audit, identity, "identity-verify", reason)
            print(f"{identity.name} is verified for {identity.login} ({identity.method}).")
            await _print_dns_advice(settings, redis, identity)
            return 0
        identity = await store.add(args.login, args.name)
        await _audited(audit, identity, "identity-add", "awaiting its DNS token")
    if identity.verified:
        print(f"{identity.name} is already verified for {identity.login}.")
        return 0
    print(f"{identity.name} added for {identity.login}, not verified yet.")
    verify = f"relay domain verify {identity.login} {identity.name}"
    print(f"Publish this TXT record, then run `{verify}`:")
    print(f'{token_name(identity.name)}. IN TXT "{token_value(identity.token)}"')
    return 0


async def _verify(args: argparse.Namespace) -> int:
    settings = load(args)
    clock = SystemClock()
    async with open_redis(settings) as redis:
        store = IdentityStore(redis, clock)
        before = await store.get(args.login, normalise_identity(args.name))
        identity = await verify_by_dns(store, make_resolver(settings.dns), args.login, args.name)
        if before is None or not before.verified:
            await _audited(
                AuditLog(redis, clock),
                identity,
                "identity-verify",
                f"DNS token found at {token_name(identity.name)}",
            )
        print(f"{identity.name} is verified for {identity.login}.")
        await _print_dns_advice(settings, redis, identity)
    return 0


async def _list(args: argparse.Namespace) -> int:
    settings = load(args)
    clock = SystemClock()
    async with open_redis(settings) as redis:
        store = IdentityStore(redis, clock)
        if args.login:
            await AccountStore(redis, clock).require(args.login)
            logins = [args.login]
        else:
            logins = [a.login for a in await AccountStore(redis, clock).list()]
        identities = [i for login in logins for i in await store.of(login)]
    if args.json:
        print_json([i.as_dict() for i in identities])
        return 0
    for i in identities:
        state = f"verified ({i.method})" if i.verified else "pending"
        print(f"{i.login:<24} {i.name:<40} {i.kind:<8} {state:<20} {when(i.verified_at)}")
    return 0


async def _remove(args: argparse.Namespace) -> int:
    settings = load(args)
    clock = SystemClock()
    async with open_redis(settings) as redis:
        identity = await IdentityStore(redis, clock).remove(args.login, args.name)
        keys: list[str] = []
        if identity.kind == "domain":
            keys = await DkimKeyStore.from_settings(redis, settings.sender_auth).remove_owned(
                identity.login, identity.name
            )
        await _audited(
            AuditLog(redis, clock),
            identity,
            "identity-remove",
            "removed by an operator",
            dkim_keys_removed=keys,
        )
    print(f"{identity.name} removed from {identity.login}: refused within a minute")
    for domain in keys:
        print(f"DKIM key of {domain} removed; remove its DNS record")
    return 0


async def _audited(
    audit: AuditLog, identity: Identity, action: str, reason: str, **evidence: object
) -> None:
    await audit.append(
        actor=operator_actor(),
        action=action,
        account=identity.login,
        subject=identity.name,
        reason=reason,
        evidence={"kind": identity.kind, "method": identity.method, **evidence},
    )


async def _print_dns_advice(settings: Settings, redis: aioredis.Redis, identity: Identity) -> None:
    """What the customer publishes once the identity is theirs: our SPF include, and the
    DKIM record when the domain has a key (an unowned key from before identities existed
    becomes this account's)."""
    domain = domain_part(identity.name)
    include = settings.sender_auth.spf_include or f"_spf.{settings.hostname}"
    example = f"v=spf1 include:{include} ~all"
    print(f'SPF: add include:{include} to the SPF record of {domain}, e.g. "{example}"')
    if identity.kind != "domain":
        return
    keys = DkimKeyStore.from_settings(redis, settings.sender_auth)
    key = await keys.get(domain)
    if key is None:
        print(f"DKIM: no key yet; make one with `relay dkim add {domain} --selector S`")
        return
    owner = await keys.owner(domain)
    if not owner:
        await keys.set_owner(domain, identity.login)
        owner = identity.login
    if owner != identity.login:
        print(f"DKIM: the key of {domain} belongs to {owner}: `relay dkim remove {domain}`")
        return
    name, value = dns_record(key)
    print(f'DKIM: {name}. IN TXT "{value}"')
