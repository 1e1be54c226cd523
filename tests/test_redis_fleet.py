"""The relay on a Redis Cluster (3 primaries, 3 replicas) and on a Sentinel-managed primary:
configuration, connecting with passwords and ACL users, and a kill -9 of the primary while
clients send: they get 250 or 4xx, never 5xx and never a hang, and every 250 is delivered."""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiosmtplib
import pytest
from redis.asyncio.connection import SSLConnection
from redis.asyncio.sentinel import SentinelManagedSSLConnection
from redis.exceptions import RedisError

from relay.app import open_redis
from relay.config import RedisSettings, Settings, load_settings
from relay.errors import ConfigError, StoreUnavailable
from relay.queue import QueueKeys
from relay.redis_client import connect_settings, describe, insecure_settings, store_errors
from relay.sink import Sink
from tests.conftest import PASSWORD, add_sender, free_port
from tests.support.redis_fleet import ClusterServers, SentinelGroup
from tests.support.relay_process import start_relay, stop_relay, write_config
from tests.test_redis_url import cli

SECRET = "s3cret-pw"
FAILOVER_NODE = "failover-node"

# -- configuration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            f'url = "redis://:{SECRET}@h:1"\ncluster_nodes = ["redis://h:2"]',
            "redis: set only one of redis.url and redis.cluster_nodes",
        ),
        (
            'cluster_nodes = ["redis://h:2"]\nsentinels = ["h:3"]\nservice = "m"',
            "redis: set only one of redis.cluster_nodes and redis.sentinels",
        ),
        (
            f'cluster_nodes = ["redis://h:1", "unix://:{SECRET}@/run/r.sock"]',
            "redis.cluster_nodes: entry 2: use redis:// or rediss:// (TLS)",
        ),
        (
            f'cluster_nodes = ["redis://u:{SECRET}@h:port"]',
            "redis.cluster_nodes: entry 1: not a URL (the value is not shown",
        ),
        (f'cluster_nodes = ["redis://:{SECRET}@/0"]', "redis.cluster_nodes: entry 1: no host"),
        (
            f'cluster_nodes = ["redis://:{SECRET}@h:1/2"]',
            "redis.cluster_nodes: entry 1: a Cluster has only database 0",
        ),
        ('sentinels = ["h:26379"]', "redis: redis.service: the Sentinel master name is required"),
        ('service = "mymaster"', "redis: redis.service: only used with redis.sentinels"),
        (
            f'sentinels = ["h:26379", "redis://:{SECRET}@h:x"]\nservice = "m"',
            "redis.sentinels: entry 2: not a URL",
        ),
        ('sentinels = ["h"]\nservice = "m"', "redis.sentinels: entry 1: no port (host:port"),
        (
            f'sentinels = ["h:26379"]\nservice = "http://u:{SECRET}@m"',
            "redis.service: use redis:// or rediss:// (TLS)",
        ),
        ('sentinels = ["h:26379"]\nservice = "my master"', "redis.service: a Sentinel master"),
    ],
)
def test_each_config_mistake_names_the_key_and_never_the_password(
    toml: str, message: str, tmp_path: Path
) -> None:
    path = tmp_path / "relay.toml"
    path.write_text(f"[redis]\n{toml}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert str(caught.value).startswith(message), str(caught.value)
    assert SECRET not in str(caught.value)


async def test_tls_users_and_passwords_reach_every_connection() -> None:
    """rediss:// and an ACL user in the first cluster URL apply to every node; the service
    URL's to the primary the Sentinels name, a rediss:// Sentinel entry's to the Sentinels."""
    cluster = connect_settings(
        RedisSettings(
            cluster_nodes=(
                f"rediss://relay:{SECRET}@r1.internal:7000?ssl_ca_certs=/etc/relay/ca.pem",
                "rediss://r2.internal:7000",
            )
        )
    )
    try:
        kwargs = cluster.nodes_manager.connection_kwargs  # type: ignore[attr-defined]
        assert issubclass(kwargs["connection_class"], SSLConnection)
        assert (kwargs["username"], kwargs["password"]) == ("relay", SECRET)
        assert kwargs["ssl_ca_certs"] == "/etc/relay/ca.pem"
        assert [n.name for n in cluster.nodes_manager.startup_nodes.values()] == [  # type: ignore[attr-defined]
            "r1.internal:7000",
            "r2.internal:7000",
        ]
    finally:
        await cluster.aclose()
    settings = RedisSettings(
        sentinels=("s1.internal:26379", f"rediss://:{SECRET}-s@s2.internal:26380"),
        service=f"rediss://relay:{SECRET}@MyMaster/0?ssl_ca_certs=/etc/relay/ca.pem",
    )
    primary = connect_settings(settings)
    try:
        pool = primary.connection_pool
        assert pool.service_name == "MyMaster"  # type: ignore[attr-defined]  # as written
        assert issubclass(pool.connection_class, SentinelManagedSSLConnection)
        assert pool.connection_kwargs["username"] == "relay"
        assert pool.connection_kwargs["password"] == SECRET
        assert pool.connection_kwargs["ssl_ca_certs"] == "/etc/relay/ca.pem"
        sentinels = primary.sentinel_group.sentinels  # type: ignore[attr-defined]
        own = sentinels[1].connection_pool.connection_kwargs
        assert (own["host"], own["port"], own["password"]) == ("s2.internal", 26380, f"{SECRET}-s")
        assert issubclass(sentinels[1].connection_pool.connection_class, SSLConnection)
    finally:
        await primary.aclose()
    assert SECRET not in describe(settings)
    assert insecure_settings(settings) is None
    plain = RedisSettings(sentinels=("10.0.0.5:26379",), service="mymaster")
    assert insecure_settings(plain) == (
        "redis.service: no TLS (use rediss://); "
        "no password (use an ACL user: rediss://user:password@host)"
    )


@pytest.mark.parametrize(
    ("env", "shown"),
    [
        (
            {"RELAY_REDIS__CLUSTER_NODES": f'["redis://u:{SECRET}@127.0.0.1:1"]'},
            "relay: cannot reach Redis at cluster redis://u:***@127.0.0.1:1: ",
        ),
        (
            {
                "RELAY_REDIS__SENTINELS": '["127.0.0.1:1"]',
                "RELAY_REDIS__SERVICE": f"redis://:{SECRET}@mm",
            },
            "relay: cannot reach Redis at sentinel service 'mm' via 127.0.0.1:1: "
            "No master found for 'mm' (no Sentinel could be reached)",
        ),
    ],
)
def test_an_unreachable_fleet_is_one_line_without_the_password(
    env: dict[str, str], shown: str, tmp_path: Path
) -> None:
    result = cli("account", "list", env=env, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith(shown), result.stderr
    assert len(result.stderr.splitlines()) == 1 and SECRET not in result.stderr


# -- connecting to real servers -----------------------------------------------------------


@pytest.mark.timeout(60)
async def test_cluster_with_an_acl_user_and_a_wrong_password(tmp_path: Path) -> None:
    servers = ClusterServers(tmp_path, password=SECRET, acl_user=("relay", f"{SECRET}-acl"))
    await asyncio.to_thread(servers.start)
    try:
        settings = Settings(redis=RedisSettings(cluster_nodes=(servers.url,)))
        async with open_redis(settings) as redis:
            # keys in all three shards: the client found every primary from one URL
            for n in range(30):
                await redis.set(f"k{n}", n)
            assert [int(await redis.get(f"k{n}")) for n in range(3)] == [0, 1, 2]
            assert sum([await redis.exists(f"k{n}") for n in range(30)]) == 30
        wrong = servers.url.replace(f"{SECRET}-acl", "wrong-pw")
        with pytest.raises(StoreUnavailable) as caught:
            async with open_redis(Settings(redis=RedisSettings(cluster_nodes=(wrong,)))):
                pass
        assert "wrong-pw" not in str(caught.value) and "relay:***@" in str(caught.value)
    finally:
        await asyncio.to_thread(servers.stop)


@pytest.mark.timeout(60)
async def test_sentinel_with_passwords_finds_the_primary_and_follows_a_failover(
    tmp_path: Path,
) -> None:
    group = SentinelGroup(tmp_path, password=SECRET)
    await asyncio.to_thread(group.start)
    try:
        settings = Settings(
            redis=RedisSettings(sentinels=tuple(group.sentinels), service=group.service)
        )
        async with open_redis(settings) as redis:
            await redis.set("before", b"1")
            role = await redis.execute_command("ROLE")
            assert role[0] == b"master"
            old = group.current_primary()
            new = await asyncio.to_thread(group.fail_primary)
            assert new != old
            async with asyncio.timeout(10):
                while True:
                    try:
                        await redis.set("after", b"2")
                        break
                    except RedisError:  # the window of the failover: a RedisError, retried
                        await asyncio.sleep(0.1)
            assert await redis.get("before") == b"1"
        wrong = RedisSettings(
            sentinels=tuple(group.sentinels), service=f"redis://:wrong-pw@{group.SERVICE}"
        )
        with pytest.raises(StoreUnavailable) as caught:
            async with open_redis(Settings(redis=wrong)):
                pass
        assert "wrong-pw" not in str(caught.value)
    finally:
        await asyncio.to_thread(group.stop)


@pytest.mark.timeout(60)
async def test_a_failover_shorter_than_the_deadline_is_ridden_out_in_one_call(
    tmp_path: Path,
) -> None:
    """kill -9 of a primary, then one SET to its shard: the client keeps trying (with a
    backoff) until the replica took over, where the library alone fails in milliseconds."""
    servers = ClusterServers(tmp_path)
    await asyncio.to_thread(servers.start)
    client = connect_settings(RedisSettings(cluster_nodes=(servers.url,), timeout="10s"))
    try:
        await client.set("{a}", 1)
        servers.kill(servers.primary_of("{a}"))
        start = time.monotonic()
        assert await client.set("{a}", 2)
        assert 1 < time.monotonic() - start < 10  # the promotion took seconds, not the call
        assert await client.get("{a}") == b"2"
    finally:
        await client.aclose()
        await asyncio.to_thread(servers.stop)


@pytest.mark.timeout(60)
async def test_a_lost_shard_is_a_store_error_within_the_deadline(tmp_path: Path) -> None:
    """Both copies of one shard die: its keys give a RedisError (StoreUnavailable through
    `store_errors`) once `redis.timeout` has passed, never a cluster-only exception and
    never a wait past it; the other shards keep serving."""
    servers = ClusterServers(tmp_path)
    await asyncio.to_thread(servers.start)
    client = connect_settings(RedisSettings(cluster_nodes=(servers.url,), timeout="1s"))
    try:
        lost, kept = "{a}", "{b}"
        assert servers.primary_of(lost) != servers.primary_of(kept)
        await client.set(lost, 1)
        primary = servers.primary_of(lost)
        replica = servers.replica_of(primary)
        servers.kill(replica)
        servers.kill(primary)
        for _ in range(3):
            start = time.monotonic()
            with pytest.raises(StoreUnavailable, match="redis: "), store_errors():
                await client.set(lost, 2)
            assert time.monotonic() - start < 1 + 1.5
        async with asyncio.timeout(10):  # the others' nodes mark the shard failed meanwhile
            while True:
                try:
                    assert await client.set(kept, 1)
                    break
                except RedisError:
                    await asyncio.sleep(0.1)
    finally:
        await client.aclose()
        await asyncio.to_thread(servers.stop)


# -- a relay through a failover -----------------------------------------------------------


@dataclass
class Load:
    """What clients saw: accepted message numbers, every non-2xx reply code, and stalls."""

    accepted: set[int] = field(default_factory=set)
    refused: list[tuple[int, str]] = field(default_factory=list)
    disconnects: int = 0
    next_n: int = 0

    def number(self) -> int:
        self.next_n += 1
        return self.next_n


async def _client(port: int, ca, load: Load, stop: asyncio.Event) -> None:
    """One client sending one message after another; after a refusal it starts a new
    session (as a real MTA would retry later). Any step taking more than 15 s is a hang."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    while not stop.is_set():
        try:
            async with asyncio.timeout(15):
                smtp = aiosmtplib.SMTP(
                    hostname="127.0.0.1", port=port, use_tls=True, tls_context=context, timeout=10
                )
                async with smtp:
                    await smtp.login("alice", PASSWORD)
                    while not stop.is_set():
                        n = load.number()
                        body = f"Subject: message {n}\r\n\r\nmessage {n}\r\n".encode()
                        try:
                            _, reply = await smtp.sendmail(
                                "alice@example.org", [f"r{n}@example.com"], body
                            )
                        except aiosmtplib.SMTPRecipientsRefused as exc:
                            load.refused += [(e.code, e.message) for e in exc.recipients]
                            break
                        assert reply.startswith("2.0.0 Queued as "), reply
                        load.accepted.add(n)
        except aiosmtplib.SMTPResponseException as exc:
            load.refused.append((exc.code, exc.message))
        except aiosmtplib.SMTPServerDisconnected:
            load.disconnects += 1
        await asyncio.sleep(0.05)


async def _until(done: Callable[[], bool], load: Load, what: str, within: float = 60) -> None:
    try:
        async with asyncio.timeout(within):
            while not done():  # noqa: ASYNC110 (the clients' tasks fill `load`)
                await asyncio.sleep(0.05)
    except TimeoutError:
        refused = load.refused[:3]
        raise AssertionError(f"not {what} in {within} s; first refusals: {refused}") from None


async def _send_through_failover(
    fleet: str,
    setup: RedisSettings,
    fail: Callable[[], Awaitable[object]],
    tmp_path: Path,
    server_cert,
    ca,
) -> Load:
    async with open_redis(Settings(redis=setup)) as redis:
        await add_sender(redis, daily=100_000, per_minute=100_000)
    port = free_port()
    sink = Sink()
    async with sink.serving() as server:
        config = tmp_path / "relay.toml"
        write_config(
            config,
            redis_url="",
            fleet=fleet,
            server_cert=server_cert,
            submit_port=port,
            sink_port=server.sockets[0].getsockname()[1],
            node=f'id = "{FAILOVER_NODE}"',
        )
        relay = await start_relay(config, port)
        load, stop = Load(), asyncio.Event()
        try:
            clients = [asyncio.create_task(_client(port, ca, load, stop)) for _ in range(4)]
            await _until(lambda: len(load.accepted) >= 20, load, "20 accepted before")
            before = len(load.accepted)
            await fail()
            after_failover = len(load.accepted)
            await _until(lambda: len(load.accepted) >= after_failover + 20, load, "20 after")
            stop.set()
            async with asyncio.timeout(30):
                await asyncio.gather(*clients)
            delivered: set[int] = set()
            async with asyncio.timeout(60):
                while not load.accepted <= delivered:
                    await asyncio.sleep(0.2)
                    delivered = {
                        int(re.search(rb"Subject: message (\d+)", m.data).group(1))  # type: ignore[union-attr]
                        for m in sink.messages
                    }
        finally:
            stop.set()
            assert await stop_relay(relay) == 0, (config.parent / "relay.log").read_text()[-3000:]
    assert before >= 20 and len(load.accepted) >= after_failover + 20
    assert not [code for code, _ in load.refused if code >= 500], load.refused
    assert load.accepted <= delivered  # 0 acknowledged messages lost
    return load


@pytest.mark.timeout(180)
async def test_relay_on_sentinel_through_a_kill_9_of_the_primary(
    tmp_path: Path, server_cert, ca
) -> None:
    group = SentinelGroup(tmp_path)
    await asyncio.to_thread(group.start)
    try:
        sentinels = ", ".join(f'"{s}"' for s in group.sentinels)
        fleet = f'sentinels = [{sentinels}]\nservice = "{group.service}"'
        setup = RedisSettings(sentinels=tuple(group.sentinels), service=group.service)
        load = await _send_through_failover(
            fleet, setup, lambda: asyncio.to_thread(group.fail_primary), tmp_path, server_cert, ca
        )
    finally:
        await asyncio.to_thread(group.stop)
    print(f"sentinel: {len(load.accepted)} accepted, {load.refused}, {load.disconnects} dropped")


@pytest.mark.timeout(180)
async def test_relay_on_a_cluster_through_a_kill_9_of_a_primary(
    tmp_path: Path, server_cert, ca
) -> None:
    servers = ClusterServers(tmp_path)
    await asyncio.to_thread(servers.start)
    try:
        # the shard of the node's queue: the worst one to lose
        victim = servers.primary_of(QueueKeys(FAILOVER_NODE).due)
        fleet = f'cluster_nodes = ["{servers.url}"]'
        setup = RedisSettings(cluster_nodes=(servers.url,))
        load = await _send_through_failover(
            fleet,
            setup,
            lambda: asyncio.to_thread(servers.fail_primary, victim),
            tmp_path,
            server_cert,
            ca,
        )
    finally:
        await asyncio.to_thread(servers.stop)
    print(f"cluster: {len(load.accepted)} accepted, {load.refused}, {load.disconnects} dropped")
