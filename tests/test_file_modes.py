"""Secrets at rest on disk: the embedded Redis and the TLS key are readable by the relay only."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.app import open_redis
from relay.config import RedisSettings, Settings
from relay.tls import ensure_self_signed


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """The usual 022, whatever the test runner has: the relay must not depend on it."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def everything_under(folder: Path) -> dict[str, int]:
    return {
        str(path.relative_to(folder)): mode(path)
        for path in sorted(folder.rglob("*"))
        if not path.is_socket()
    }


async def test_embedded_redis_files_are_private(tmp_path: Path, loose_umask: None) -> None:
    """Started through `open_redis` as `relay run` does, with a fresh `var/`."""
    var = tmp_path / "var"
    folder = var / "redis"
    settings = Settings(redis=RedisSettings(url="", embedded_dir=folder))
    async with open_redis(settings) as redis:
        await redis.hset("dkim:keys", "example.com", "-----BEGIN PRIVATE KEY-----")
        await redis.set("account:alice", "$argon2id$v=19$...")
        aofs = [p for p in folder.rglob("*.aof*") if p.is_file()]
        assert aofs and any(b"argon2id" in p.read_bytes() for p in aofs), "data is in the AOF"
        socket = folder / "redis.sock"
        assert socket.is_socket()
        assert mode(socket) & 0o077 == 0, oct(mode(socket))
        assert mode(socket.parent) == 0o700  # the folder that holds the socket
        files = everything_under(folder)
    assert mode(var) == 0o700, "var/ created by the relay is private"
    assert mode(folder) == 0o700
    assert "redis.conf" in files and "redis.log" in files
    assert {name: oct(m) for name, m in files.items() if m not in (0o600, 0o700)} == {}
    for name, m in files.items():
        assert m == (0o700 if (folder / name).is_dir() else 0o600), name


async def test_an_old_install_is_made_private_on_start(tmp_path: Path, loose_umask: None) -> None:
    """Files left 0644 in a 0755 folder by an earlier version are tightened on start."""
    folder = tmp_path / "redis"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    old_aof = folder / "appendonly.aof"
    old_aof.write_bytes(b"*1\r\n$4\r\nPING\r\n")
    os.chmod(old_aof, 0o644)
    (folder / "redis.log").write_text("old log\n")
    os.chmod(folder / "redis.log", 0o644)
    nested = folder / "appendonlydir"
    nested.mkdir(mode=0o755)
    os.chmod(nested, 0o755)
    settings = Settings(redis=RedisSettings(url="", embedded_dir=folder))
    async with open_redis(settings) as redis:
        await redis.set("k", "v")
        assert mode(folder) == 0o700
        assert mode(nested) == 0o700
        assert mode(folder / "redis.log") == 0o600
        for aof in folder.rglob("*.aof*"):
            assert mode(aof) == 0o600, aof


def test_self_signed_key_is_private(tmp_path: Path, loose_umask: None) -> None:
    cert, key = tmp_path / "var" / "tls" / "cert.pem", tmp_path / "var" / "tls" / "key.pem"
    assert ensure_self_signed(cert, key, "relay.test")
    assert mode(key) == 0o600
    assert mode(key.parent) == 0o700
    assert mode(tmp_path / "var") == 0o700
