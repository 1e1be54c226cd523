"""Spool folders for tests that build their own queue: real files, removed at exit."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

from relay.spool import Spool

_BASE = Path(tempfile.mkdtemp(prefix="relay-test-spools-"))
atexit.register(shutil.rmtree, _BASE, True)


def temp_spool() -> Spool:
    return Spool(Path(tempfile.mkdtemp(dir=_BASE)) / "spool")  # made by the relay itself
