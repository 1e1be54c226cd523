"""The `relay` command: one argparse tree; each area registers its subcommands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from relay.cli import (
    abuse,
    accounts,
    apps,
    content,
    domains,
    ip,
    nodes,
    operators,
    plans,
    queue,
    sender_auth,
    service,
    shaping,
    spool,
)
from relay.cli.common import Failure, run_command
from relay.config import LogSettings
from relay.logging import configure_logging
from relay.safe_text import clean_line

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relay", description="Outbound SMTP relay: submission, queue, delivery."
    )
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="TOML config (default: $RELAY_CONFIG, else config/relay.toml if present)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    service.register(commands)
    accounts.register(commands)
    plans.register(commands)
    abuse.register(commands)
    domains.register(commands)
    sender_auth.register(commands)
    queue.register(commands)
    spool.register(commands)
    ip.register(commands)
    nodes.register(commands)
    apps.register_commands(commands)
    operators.register(commands)
    content.register(commands)
    shaping.register(commands)
    _accept_config_anywhere(parser)
    return parser


def _accept_config_anywhere(parser: argparse.ArgumentParser) -> None:
    """`relay --config X run` and `relay run --config X` both work."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                sub.add_argument(
                    "--config", metavar="PATH", default=argparse.SUPPRESS, help="TOML config file"
                )
                _accept_config_anywhere(sub)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Operator commands print their results on stdout; only warnings go to stderr.
    # `relay run` and `relay sink` reconfigure from the config's [log] section.
    configure_logging(LogSettings(level="warning"))
    try:
        return run_command(args)
    except Failure as exc:  # one line, whatever text from outside the message quotes
        print(f"relay: {clean_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
