"""`relay dkim add|list|remove` and `relay spf-record`: what customers put in their DNS."""

from __future__ import annotations

import argparse

import redis.asyncio as aioredis

from relay.app import open_redis
from relay.cli.common import Failure, load, print_json
from relay.config import Settings
from relay.sender_auth import DkimKeyStore, spf_record
from relay.sender_auth.key_vault import KeyVault
from reputation.dkim import Algorithm, DkimError, dns_record, generate_key


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = commands.add_parser("dkim", help="DKIM keys of sender domains (mail is signed)")
    sub = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = sub.add_parser("add", help="make a key for a domain and print its DNS record")
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
    try:
        key = generate_key(args.domain, args.selector, algorithm, args.bits)
    except DkimError as exc:
        raise Failure(str(exc)) from None
    async with open_redis(settings) as redis:
        await _store(redis, settings).put(key)
    name, value = dns_record(key)
    print(f"mail from {key.domain} is now signed (selector {key.selector}, {algorithm}).")
    print("Publish this TXT record:")
    print(f'{name}. IN TXT "{value}"')
    return 0


def _store(redis: aioredis.Redis, settings: Settings) -> DkimKeyStore:
    return DkimKeyStore(redis, KeyVault.from_settings(settings.sender_auth))


async def _list(args: argparse.Namespace) -> int:
    settings = load(args)
    async with open_redis(settings) as redis:
        keys = await _store(redis, settings).domains()
    rows = [(k, *dns_record(k)) for k in keys]
    if args.json:
        print_json(
            [
                {
                    "domain": k.domain,
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
        print(f"{k.domain:<30} {k.selector:<12} {k.algorithm:<15} {name}")
    return 0


async def _remove(args: argparse.Namespace) -> int:
    settings = load(args)
    async with open_redis(settings) as redis:
        await _store(redis, settings).remove(args.domain)
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
