"""`relay ip list|disable|enable`: the egress pool and the state every relay process shares."""

from __future__ import annotations

import argparse
import ipaddress

from relay.app import open_redis
from relay.cli.common import Failure, load, print_json, when
from relay.clock import SystemClock
from relay.delivery.egress_state import egress_state
from relay.safe_text import clean_line


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ip = commands.add_parser("ip", help="the egress IP pool: state, disable, enable")
    sub = ip.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = sub.add_parser("list", help="every egress IP with its state and cool-downs")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_list)
    disable = sub.add_parser("disable", help="take an IP out of rotation until enabled")
    disable.add_argument("ip")
    disable.add_argument("--reason", required=True, help="why (shown in `relay ip list`)")
    disable.set_defaults(handler=_disable)
    enable = sub.add_parser("enable", help="put an IP back into rotation and end its cool-downs")
    enable.add_argument("ip")
    enable.set_defaults(handler=_enable)


def _address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise Failure(f"not an IP address: {text!r}") from None


async def _list(args: argparse.Namespace) -> int:
    settings = load(args)
    async with open_redis(settings) as redis:
        state = egress_state(redis, SystemClock(), settings.delivery)
        reports = await state.describe(settings.delivery.egress)
    if args.json:
        print_json([r.as_dict() for r in reports])
        return 0
    if not reports:
        print("no egress IPs configured (delivery.egress): the system picks the source address")
        return 0
    for r in reports:
        helo = r.helo if r.helo is not None else "(not in delivery.egress)"
        print(f"{r.ip:<16} {helo:<32} {r.state}")
        if r.disabled is not None:
            print("    " + clean_line(f"disabled since {when(r.disabled[1])}: {r.disabled[0]}"))
        if r.listed is not None:
            # the blocklist's TXT answer: text from outside
            print("    " + clean_line(f"listed since {when(r.listed[1])}: {r.listed[0]}"))
        for domain, until in r.cooling:
            print(f"    cooling down for {domain} until {when(until)}")
    usable = sum(1 for r in reports if r.helo is not None and r.state in ("healthy", "cooling"))
    print(f"{usable} of {len(settings.delivery.egress)} IP(s) in rotation")
    return 0


async def _disable(args: argparse.Namespace) -> int:
    settings = load(args)
    ip = _address(args.ip)
    if ip not in {e.ip for e in settings.delivery.egress}:
        raise Failure(f"{ip} is not in the egress pool (delivery.egress)")
    reason = " ".join(args.reason.split())
    if not reason:
        raise Failure("give a reason: --reason TEXT")
    async with open_redis(settings) as redis:
        await egress_state(redis, SystemClock(), settings.delivery).disable(ip, reason)
    print(f"disabled {ip}: {reason}")
    return 0


async def _enable(args: argparse.Namespace) -> int:
    settings = load(args)
    ip = _address(args.ip)
    async with open_redis(settings) as redis:
        state = egress_state(redis, SystemClock(), settings.delivery)
        was_disabled = await state.enable(ip)
        listed = [r for r in await state.describe(settings.delivery.egress) if r.ip == ip]
    print(f"enabled {ip}" if was_disabled else f"{ip} was not disabled; its cool-downs ended")
    if listed and listed[0].listed is not None:
        print(
            f"warning: {ip} is still listed ({listed[0].listed[0]}): out of rotation until delisted"
        )
    return 0
