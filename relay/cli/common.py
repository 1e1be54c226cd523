"""What every subcommand shares: config loading, the Redis connection, output, errors."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import getpass
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from relay.config import Settings, load_settings
from relay.errors import ConfigError, RelayError

__all__ = ["Failure", "load", "print_json", "read_password", "run_command", "when"]

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


def run_command(args: argparse.Namespace) -> int:
    handler: Callable[[argparse.Namespace], Awaitable[int] | int] = args.handler
    try:
        result = handler(args)
        if asyncio.iscoroutine(result):
            return int(asyncio.run(result))
        return int(result)  # type: ignore[arg-type]
    except ConfigError as exc:
        raise Failure(f"config error: {exc}", exit_code=2) from None
    except RelayError as exc:
        raise Failure(str(exc)) from None


def when(timestamp: float | None) -> str:
    """A time as operators read it: UTC, to the second; "-" for none."""
    if timestamp is None:
        return "-"
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


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
