"""`relay reload`: check the shaping file, then have every relay process reload it."""

from __future__ import annotations

import argparse

from relay.app import open_redis
from relay.cli.common import Failure, load
from relay.delivery.shaping import load_shaping
from relay.delivery.shaping_source import request_reload
from relay.errors import ConfigError


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    reload = commands.add_parser(
        "reload",
        help="validate delivery.shaping, then every relay process (every node) reloads it",
    )
    reload.set_defaults(handler=_reload)


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
