"""A throwaway Dovecot serving only SASL AUTH to the bench's Postfix, as a provider would
deploy it: passwords in a passwd-file hashed with argon2id, the auth cache switched on.

The hashes are the relay's own (`relay.accounts.passwords.hash_password`: argon2id,
m=19456 KiB, t=2, p=1, OWASP's floor), so both sides pay the same key derivation per check.
Dovecot verifies them in its single auth process, one at a time, whatever the core count.

The auth cache (`auth_cache_size`) is on, but Dovecot caches only passdbs with a cache key
(SQL, LDAP, ...): with passwd-file every login pays for argon2 again. The bench asks the auth
process for its cache counters (SIGUSR2) and prints them, so the table says what happened.

`bench/install-postfix.sh` installs it (Debian's dovecot-core). No mail protocol is served
(`protocols =`): only the auth socket in Postfix's `private/` directory.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bench.net import children

__all__ = ["CacheStats", "Dovecot", "dovecot_binary", "parse_cache_stats"]

CONFIG = """\
protocols =
instance_name = dovecot-bench
base_dir = {run}
state_dir = {state}
log_path = {log}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_cache_size = {cache_size}
auth_cache_ttl = 1 hour
auth_cache_negative_ttl = 1 hour
passdb {{
  driver = passwd-file
  args = scheme=ARGON2ID username_format=%u {users}
}}
userdb {{
  driver = static
  args = uid=65534 gid=65534 home=/nonexistent
}}
service auth {{
  unix_listener {socket} {{
    mode = 0660
    user = postfix
    group = postfix
  }}
}}
"""

_CACHE_LINE = re.compile(r"Authentication cache hits (\d+)/(\d+)")


def dovecot_binary() -> str | None:
    found = shutil.which("dovecot") or (
        "/usr/sbin/dovecot" if Path("/usr/sbin/dovecot").exists() else None
    )
    if found is None or os.geteuid() != 0:  # its auth process runs as user `dovecot`
        return None
    return found


@dataclass(frozen=True)
class CacheStats:
    hits: int
    lookups: int

    def __str__(self) -> str:
        return f"auth cache hits {self.hits}/{self.lookups}"


def parse_cache_stats(log: str) -> CacheStats | None:
    """The last `Authentication cache hits H/N` line Dovecot logged (after SIGUSR2)."""
    found = _CACHE_LINE.findall(log)
    if not found:
        return None
    hits, lookups = found[-1]
    return CacheStats(int(hits), int(lookups))


class Dovecot:
    def __init__(
        self, base: Path, *, socket: Path, users: Iterable[tuple[str, str]], cache_size: str
    ) -> None:
        """`users`: (login, argon2id hash as argon2-cffi writes it) pairs."""
        self.base = base.resolve()
        self.socket = socket
        self.users = list(users)
        self.cache_size = cache_size
        self.binary = dovecot_binary() or "dovecot"
        self.process: subprocess.Popen[bytes] | None = None
        self.run_dir = ""
        self.log = self.base / "dovecot.log"

    def start(self) -> None:
        if self.base.exists():
            shutil.rmtree(self.base)
        (self.base / "state").mkdir(parents=True)
        # A short base_dir (its sockets' paths must fit in 108 bytes), world-searchable as
        # Dovecot wants it, which also holds the users file: its auth process reads that as
        # user dovecot, who may not get into `base` (e.g. a 0700 temporary directory).
        self.run_dir = tempfile.mkdtemp(prefix="bench-dovecot-")
        os.chmod(self.run_dir, 0o755)
        users = Path(self.run_dir) / "users"
        users.write_text("".join(f"{login}:{{ARGON2ID}}{hashed}\n" for login, hashed in self.users))
        users.chmod(0o640)
        shutil.chown(users, "root", "dovecot")
        config = self.base / "dovecot.conf"
        config.write_text(
            CONFIG.format(
                run=self.run_dir,
                state=self.base / "state",
                log=self.log,
                cache_size=self.cache_size,
                users=users,
                socket=self.socket,
            )
        )
        with open(self.base / "stderr", "wb") as stderr:
            self.process = subprocess.Popen(
                [self.binary, "-F", "-c", str(config)], stdout=subprocess.DEVNULL, stderr=stderr
            )
        deadline = time.monotonic() + 20
        while not self.socket.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"dovecot did not start: {self.errors() or 'no socket ' + str(self.socket)}"
                )
            time.sleep(0.05)

    def errors(self) -> str:
        text = ""
        for name in ("stderr", "dovecot.log"):
            with contextlib.suppress(OSError):
                text += (self.base / name).read_text(errors="replace")
        lines = [line for line in text.splitlines() if "Error" in line or "Fatal" in line]
        return " | ".join(lines[-3:])

    def pids(self) -> list[int]:
        """The master and its children (auth, config, anvil, log, ...)."""
        if self.process is None or self.process.poll() is not None:
            return []
        master = self.process.pid
        return [master, *children(master)]

    def cache_stats(self, within: float = 3.0) -> CacheStats | None:
        """Ask the auth process for its cache counters; None when it does not answer."""
        auth = [
            pid
            for pid in self.pids()[1:]
            if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].endswith(b"/auth")
        ]
        if not auth:
            return None
        before = self.log.stat().st_size if self.log.exists() else 0
        os.kill(auth[0], signal.SIGUSR2)
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), self.log.open(errors="replace") as log:
                log.seek(before)
                found = parse_cache_stats(log.read())
                if found is not None:
                    return found
            time.sleep(0.05)
        return None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            self.run_dir = ""
