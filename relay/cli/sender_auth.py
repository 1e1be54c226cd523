"""`relay dkim add|list|remove` and `relay spf-record`: what customers put in their DNS."""

from __future__ import annotations

import argparse

import redis.asyncio as aioredis

from relay.abuse.audit import AuditLog
from relay.app import open_redis
from relay.cli.common import Failure, load, operator_actor, print_json
from relay.clock import SystemClock
from relay.config import Settings
from relay.sender_auth import DkimKeyStore, IdentityStore, spf_record
from relay.sender_auth.identities import normalise_domain
from relay.sender_auth.key_vault import KeyVault
from reputation.dkim import Algorithm, DkimError, dns_record, generate_key


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = commands.add_parser("dkim", help="DKIM keys of sender domains (mail is signed)")
    sub = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = sub.add_parser(
        "add", help="make a key for a verified domain (signs its owner's mail); print its record"
    )
    add.add_argument("domain")
    add.add_argument("--selector", required=True)
    add.add_argument("--algorithm", choices=["rsa", "ed25519"], default="rsa")
    add.add_argument("--bits", type=int, default=2048, help="RSA key size")
    add.set_defaults(handler=_add)
    listing = sub.add_parser("list", help="domains with a key, and their DNS records")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_list)
    remove = sub.add_parser("remove", help="stop signing for a domain")
    remove.add_argument("domain")
    remove.set_defaults(handler=_remove)
    rekey = sub.add_parser(
        "rekey", help="encrypt every stored key with the current key of sender_auth.key_file"
    )
    rekey.set_defaults(handler=_rekey)

    spf = commands.add_parser("spf-record", help="the SPF record customers include")
    spf.set_defaults(handler=_spf)


async def _add(args: argparse.Namespace) -> int:
    settings = load(args)
    algorithm: Algorithm = "ed25519-sha256" if args.algorithm == "ed25519" else "rsa-sha256"
    domain = normalise_domain(args.domain)
    try:
        key = generate_key(domain, args.selector, algorithm, args.bits)
    except DkimError as exc:
        raise Failure(str(exc)) from None
    clock = SystemClock()
    async with open_redis(settings) as redis:
        owner = await IdentityStore(redis, clock).owner(domain)
        if owner is None:
            raise Failure(
                f"{domain} is not a verified sender domain of any account: "
                f"`relay domain add LOGIN {domain}` and verify it first"
            )
        keys = _store(redis, settings)
        await keys.set_owner(domain, owner)
        await keys.put(key)
        await AuditLog(redis, clock).append(
            actor=operator_actor(),
            action="dkim-add",
            account=owner,
            subject=domain,
            reason=f"selector {key.selector}, {algorithm}",
        )
    name, value = dns_record(key)
    print(
        f"mail from {key.domain} sent by {owner} is now signed"
        f" (selector {key.selector}, {algorithm})."
    )
    print("Publish this TXT record:")
    print(f'{name}. IN TXT "{value}"')
    return 0


def _store(redis: aioredis.Redis, settings: Settings) -> DkimKeyStore:
    return DkimKeyStore.from_settings(redis, settings.sender_auth)


async def _list(args: argparse.Namespace) -> int:
    settings = load(args)
    async with open_redis(settings) as redis:
        store = _store(redis, settings)
        keys = await store.domains()
        owners = await store.owners()
    rows = [(k, *dns_record(k)) for k in keys]
    if args.json:
        print_json(
            [
                {
                    "domain": k.domain,
                    "owner": owners.get(k.domain, ""),
                    "selector": k.selector,
                    "algorithm": k.algorithm,
                    "record_name": name,
                    "record": value,
                }
                for k, name, value in rows
            ]
        )
        return 0
    for k, name, _ in rows:
        owner = owners.get(k.domain) or "(no owner: signs nothing)"
        print(f"{k.domain:<30} {owner:<24} {k.selector:<12} {k.algorithm:<15} {name}")
    return 0


async def _remove(args: argparse.Namespace) -> int:
    settings = load(args)
    async with open_redis(settings) as redis:
        store = _store(redis, settings)
        owner = await store.owner(args.domain)
        await store.remove(args.domain)
        await AuditLog(redis, SystemClock()).append(
            actor=operator_actor(),
            action="dkim-remove",
            account=owner,
            subject=args.domain.lower(),
        )
    print(f"mail from {args.domain} is no longer signed; remove its DNS record when unused")
    return 0


async def _rekey(args: argparse.Namespace) -> int:
    settings = load(args)
    vault = KeyVault.from_settings(settings.sender_auth)
    async with open_redis(settings) as redis:
        report = await DkimKeyStore(redis, vault).rekey()
    done = report.from_clear + report.from_old_keys
    if not report.key_id:
        print("no DKIM keys stored: nothing to encrypt")
        return 0
    if not done and not report.changed_meanwhile:
        print(f"all {report.unchanged} DKIM key(s) already encrypted with key {report.key_id}")
        return 0
    print(
        f"{done} DKIM key(s) re-encrypted with key {report.key_id}"
        f" ({report.from_clear} were in clear, {report.from_old_keys} under older keys);"
        f" {report.unchanged} already were"
    )
    if report.changed_meanwhile:
        print(f"{report.changed_meanwhile} changed meanwhile and were left as written: run again")
    else:
        print(f"Keys other than the first can now be removed from {vault.where}")
    return 0 if not report.changed_meanwhile else 1


def _spf(args: argparse.Namespace) -> int:
    settings = load(args)
    ips = [e.ip for e in settings.delivery.egress]
    if not ips:
        raise Failure("delivery.egress is empty: the system picks the source address")
    include = settings.sender_auth.spf_include or f"_spf.{settings.hostname}"
    name, value = spf_record(ips, include)
    print("Publish (provider):")
    print(f'{name}. IN TXT "{value}"')
    print("Customers add to their domain's SPF record:")
    print(f'include:{name}    e.g. "v=spf1 include:{name} ~all"')
    return 0
