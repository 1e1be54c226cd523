"""Folders and files that hold secrets: readable by the relay's user only (0700 / 0600).

The embedded Redis's AOF holds DKIM keys, password hashes and message bodies; the TLS and
DKIM-encryption keys are files of their own. Left to the umask (usually 022) they would be
0644 in 0755 folders, readable by every local user.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

__all__ = ["make_private_dirs", "restrict_tree", "write_private"]

DIR_MODE = 0o700
FILE_MODE = 0o600


def make_private_dirs(path: Path) -> None:
    """Create `path` and its missing parents 0700; folders that exist are left as they are.

    (`Path.mkdir(parents=True, mode=...)` gives the mode to the last folder only.)
    """
    missing = []
    current = path.absolute()
    while not current.exists():
        missing.append(current)
        current = current.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, DIR_MODE)
        except FileExistsError:  # created meanwhile by another process
            continue
        os.chmod(folder, DIR_MODE)  # the umask applies to mkdir; make the mode exact


def restrict_tree(path: Path) -> None:
    """Make a folder the relay owns, and everything in it, 0700 (folders) / 0600 (files).

    Run on every start, so an install made before this existed is fixed too. Sockets and
    symlinks are left alone (the server sets its socket's mode itself).
    """
    os.chmod(path, DIR_MODE)
    for root, folders, files in os.walk(path):
        for name in folders:
            _chmod_if(Path(root, name), stat.S_ISDIR, DIR_MODE)
        for name in files:
            _chmod_if(Path(root, name), stat.S_ISREG, FILE_MODE)


def write_private(path: Path, data: bytes) -> None:
    """Write a file 0600 from its first byte on (not written, then chmod-ed)."""
    make_private_dirs(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "wb") as file:
        os.fchmod(file.fileno(), FILE_MODE)  # an existing file keeps its old mode otherwise
        file.write(data)


def _chmod_if(path: Path, kind: Callable[[int], bool], mode: int) -> None:
    info = path.lstat()
    if kind(info.st_mode) and stat.S_IMODE(info.st_mode) != mode:
        os.chmod(path, mode)
