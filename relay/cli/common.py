"""What every subcommand shares: config loading, the Redis connection, output, errors."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import pwd
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from relay.config import Settings, load_settings
from relay.errors import ConfigError, RelayError
from relay.submission.policy import format_wait
from reputation.suspension import utc_text

__all__ = [
    "Failure",
    "load",
    "operator_actor",
    "print_json",
    "read_password",
    "refuse_option",
    "run_command",
    "when",
]

DEFAULT_CONFIG = Path("config/relay.toml")


class Failure(Exception):
    """A command failed; the message is one line for the operator."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def config_path(args: argparse.Namespace) -> Path | None:
    if args.config:
        return Path(args.config)
    if os.environ.get("RELAY_CONFIG"):
        return Path(os.environ["RELAY_CONFIG"])
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


def load(args: argparse.Namespace) -> Settings:
    try:
        return load_settings(config_path(args))
    except ConfigError as exc:
        raise Failure(f"config error: {exc}", exit_code=2) from None


def operator_actor() -> str:
    """Who runs this command, as the audit log records it: the OS user of the process (its
    effective uid), which the caller cannot choose. Never $LOGNAME/$USER or a flag: anyone
    can set those to another operator's name."""
    uid = os.geteuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:  # a uid without a passwd entry (containers)
        name = f"uid:{uid}"
    return f"operator:{name}"


class _Refused(argparse.Action):
    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        namespace.refused_option = f"{option_string} {self.const}"


def refuse_option(parser: argparse.ArgumentParser, flag: str, why: str) -> None:
    """An option that is gone on purpose: using it ends in one line saying why (rather than
    argparse's usage text, or silently doing something else than the caller meant)."""
    parser.add_argument(flag, action=_Refused, nargs="?", const=why, help=argparse.SUPPRESS)


async def _awaited(result: Awaitable[int]) -> int:
    return await result


def run_command(args: argparse.Namespace) -> int:
    handler: Callable[[argparse.Namespace], Awaitable[int] | int] = args.handler
    if getattr(args, "refused_option", None):
        raise Failure(args.refused_option)
    try:
        result = handler(args)
        if isinstance(result, int):
            return result
        return int(asyncio.run(_awaited(result)))
    except ConfigError as exc:
        raise Failure(f"config error: {exc}", exit_code=2) from None
    except RelayError as exc:
        raise Failure(str(exc)) from None


def when(timestamp: float | None) -> str:
    """A time as operators read it: UTC, to the second; "-" for none."""
    return "-" if timestamp is None else utc_text(timestamp)


def until(timestamp: float, now: float) -> str:
    """How long until then: `4d23h` past a day, else as SMTP replies say it (`2h13m`)."""
    seconds = max(0.0, timestamp - now)
    if seconds < 86400:
        return format_wait(seconds)
    hours = int(-(-seconds // 3600))  # rounded up: asking again then is not refused again
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


def read_password(from_stdin: bool, prompt: str = "Password: ") -> str | None:
    """The password from stdin (first line) or an interactive prompt; None: generate one."""
    if from_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise Failure("no password on stdin")
        return line
    if sys.stdin.isatty():
        entered = getpass.getpass(prompt)
        return entered or None
    return None
