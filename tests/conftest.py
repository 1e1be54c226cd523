"""Shared fixtures: a real redis-server on a free port, a fake clock, TLS certificates."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import structlog
import trustme
from redis.asyncio.cluster import RedisCluster

from quota import Duration
from relay.clock import FakeClock
from relay.config import RedisSettings
from relay.embedded_redis import EmbeddedRedis
from relay.redis_client import connect, connect_settings
from relay.sink import Sink
from tests.support.dns_server import DnsServer
from tests.support.redis_fleet import ClusterServers, SentinelGroup, on_cluster


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@pytest.fixture(autouse=True)
def _logging_as_found() -> Iterator[None]:
    """A test that configures logging (JSON to a buffer, a level) leaves it as it found it:
    another test's `capture_logs` must still see info events."""
    saved = structlog.get_config()
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    structlog.configure(**saved)
    root.setLevel(level)
    root.handlers[:] = handlers


@pytest.fixture(scope="session")
def redis_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EmbeddedRedis | ClusterServers]:
    """The Redis of the tests: one embedded server; with `RELAY_TEST_REDIS=cluster`, the
    session's 3+3 Cluster (its `url` is one node's: enough to find the others)."""
    if on_cluster():
        yield request.getfixturevalue("redis_cluster")
        return
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), port=free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def redis(redis_server: EmbeddedRedis | ClusterServers) -> AsyncIterator[aioredis.Redis]:
    """A client of `redis_server` with nothing in it (every primary flushed on a cluster)."""
    client = client_of(redis_server)
    if isinstance(redis_server, ClusterServers):
        redis_server.flush()
    else:
        await client.flushall()
    yield client
    if isinstance(redis_server, ClusterServers):
        # Tasks a test leaves behind (a quota release after the session ended) may still
        # call: a closed cluster client reconnects for them and nobody closes that again
        # (ResourceWarning in a later test). A single server's client does not show it.
        await asyncio.sleep(0.5)
    await client.aclose()


def client_of(server: EmbeddedRedis | ClusterServers, timeout: float = 5.0) -> aioredis.Redis:
    """Another client of `redis_server` (a cluster client when it is the Cluster)."""
    if isinstance(server, ClusterServers):
        return connect_settings(
            RedisSettings(cluster_nodes=(server.url,), timeout=Duration(timeout))
        )
    return connect(server.url, timeout=timeout)


def redis_settings(server: EmbeddedRedis | ClusterServers) -> RedisSettings:
    """The `redis` settings of a relay that uses `redis_server`."""
    if isinstance(server, ClusterServers):
        return RedisSettings(cluster_nodes=(server.url,))
    return RedisSettings(url=server.url)


async def command_calls(redis: aioredis.Redis, name: str) -> int:
    """How often the server (every primary of a cluster) ran command `name` so far."""
    if isinstance(redis, RedisCluster):
        per_node = await redis.info("commandstats", target_nodes=RedisCluster.PRIMARIES)
        found = list(per_node.values())
    else:
        found = [await redis.info("commandstats")]
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for stats in found)


def redis_toml(server: EmbeddedRedis | ClusterServers) -> str:
    """The `[redis]` line of a config file that points at `redis_server`."""
    if isinstance(server, ClusterServers):
        return f'cluster_nodes = ["{server.url}"]'
    return f'url = "{server.url}"'


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterServers]:
    """A 3-primary, 3-replica Redis Cluster on loopback for the session (started by the
    first test that asks for it; a test that kills nodes starts its own)."""
    servers = ClusterServers(tmp_path_factory.mktemp("cluster")).start()
    yield servers
    servers.stop()


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelGroup]:
    """1 primary, 1 replica and 3 Sentinels on loopback for the session (as above)."""
    group = SentinelGroup(tmp_path_factory.mktemp("sentinel")).start()
    yield group
    group.stop()


@pytest.fixture
async def dns() -> AsyncIterator[DnsServer]:
    """A DNS server on 127.0.0.1 serving what the test loads (empty: everything NXDOMAIN)."""
    async with DnsServer() as server:
        yield server


@pytest.fixture
async def sink() -> AsyncIterator[tuple[Sink, int]]:
    """A catch-all SMTP sink on 127.0.0.1 and its port."""
    sink = Sink()
    async with sink.serving("127.0.0.1", 0) as server:
        yield sink, server.sockets[0].getsockname()[1]


async def wait_until(predicate, within: float = 10.0) -> None:
    """Poll an async predicate until true; fails after `within` seconds."""
    async with asyncio.timeout(within):
        while not await predicate():  # noqa: ASYNC110 (state lives in another process/Redis)
            await asyncio.sleep(0.05)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def server_cert(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(cert chain, key) files for the relay's listeners, valid for localhost and 127.0.0.1."""
    cert = ca.issue_cert("localhost", "127.0.0.1", "relay.test")
    folder = tmp_path_factory.mktemp("tls")
    chain, key = folder / "cert.pem", folder / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(key))
    for n, blob in enumerate(cert.cert_chain_pems):
        blob.write_to_path(str(chain), append=n > 0)
    return chain, key


PASSWORD = "correct horse battery"


async def add_sender(
    redis: aioredis.Redis,
    login: str = "alice",
    *,
    daily: int = 1000,
    per_minute: int = 1000,
    sends_from: tuple[str, ...] | None = None,
) -> None:
    """An account that can send: a login with PASSWORD, one plan, and verified sender
    identities (by default its own address `LOGIN@example.org`, which the relay's default
    `sender_auth.identities = "enforce"` requires in MAIL FROM and From:)."""
    from quota import Plan, QuotaStore
    from relay.accounts import AccountStore
    from relay.clock import SystemClock
    from relay.sender_auth import IdentityStore

    await AccountStore(redis, SystemClock()).add(login, PASSWORD)
    store = QuotaStore(redis, default_per_minute=per_minute, per_recipient=100)
    await store.add_plan(login, Plan("test", daily=daily, per_minute=per_minute))
    identities = IdentityStore(redis, SystemClock())
    for name in (f"{login}@example.org",) if sends_from is None else sends_from:
        await identities.mark_verified(login, name, "operator")


@pytest.fixture(scope="session")
def clamd_server(tmp_path_factory: pytest.TempPathFactory):
    """A real clamd (tests/support/scanners.py) for the whole session: EICAR and one custom
    signature, on a unix socket and a loopback port."""
    from tests.support.scanners import Clamd

    server = Clamd(tmp_path_factory.mktemp("clamd"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def rspamd_server(tmp_path_factory: pytest.TempPathFactory):
    """A real rspamd for the whole session (its first start compiles regexps: ~10 s)."""
    from tests.support.scanners import Rspamd

    server = Rspamd(tmp_path_factory.mktemp("rspamd"))
    server.start()
    yield server
    server.stop()
