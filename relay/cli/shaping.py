"""`relay reload` (the shaping rules) and `relay tls-report` (RFC 8460 reports)."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

from dns.asyncresolver import Resolver as AsyncResolver

from relay.app import open_redis
from relay.cli.common import Failure, load
from relay.config import Settings
from relay.delivery.mx import make_resolver
from relay.delivery.shaping import load_shaping
from relay.delivery.shaping_source import request_reload
from relay.delivery.tls_report import TlsReports, build_report, report_name, rua_of
from relay.errors import ConfigError


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    reload = commands.add_parser(
        "reload",
        help="validate delivery.shaping, then every relay process (every node) reloads it",
    )
    reload.set_defaults(handler=_reload)
    report = commands.add_parser(
        "tls-report",
        help="write one day's TLS reports (RFC 8460 JSON) per MTA-STS domain, with their rua",
    )
    report.add_argument("--day", help="UTC day YYYY-MM-DD (default: yesterday)")
    report.add_argument("--dir", required=True, help="folder for the .json reports")
    report.set_defaults(handler=_tls_report)


async def _reload(args: argparse.Namespace) -> int:
    settings = load(args)
    try:  # refused here, with the key named, before any process sees it
        shaping = load_shaping(settings.delivery.shaping, settings.delivery)
    except ConfigError as exc:
        raise Failure(f"shaping not reloaded: {exc}", exit_code=2) from None
    async with open_redis(settings) as redis:
        generation = await request_reload(redis)
    names = ", ".join(rule.name for rule in shaping.rules)
    print(
        f"shaping {shaping.source}: {len(shaping.rules)} rule(s) ({names}); every relay"
        f" process reloads it at its next poll (generation {generation})"
    )
    return 0


def _tls_report(args: argparse.Namespace) -> int:
    settings = load(args)
    day = args.day or time.strftime("%Y-%m-%d", time.gmtime(time.time() - 86400))
    try:
        time.strptime(day, "%Y-%m-%d")
    except ValueError:
        raise Failure(f"--day: not a day (YYYY-MM-DD): {day!r}") from None
    counts, rua = asyncio.run(_day(settings, day))
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    for domain, fields in counts.items():
        report = build_report(
            domain,
            fields,
            day=day,
            organization=settings.hostname,
            contact=f"postmaster@{settings.hostname}",
            report_id=f"{day}.{domain}@{settings.hostname}",
        )
        path = folder / report_name(settings.hostname, domain, day)
        path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"{path}\t{','.join(rua[domain]) or '(no rua published)'}")
    if not counts:
        print(f"no session under an MTA-STS policy on {day}")
    return 0


async def _day(
    settings: Settings, day: str
) -> tuple[dict[str, dict[str, str]], dict[str, list[str]]]:
    """The day's counts per domain, and where each domain wants its report."""
    async with open_redis(settings) as redis:
        counts = await TlsReports(redis).day(day)
    resolver: AsyncResolver = make_resolver(settings.dns)
    return counts, {domain: await rua_of(domain, resolver) for domain in counts}
