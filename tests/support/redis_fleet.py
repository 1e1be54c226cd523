"""Real Redis fleets on loopback for the tests: a 3-primary, 3-replica Cluster and a
Sentinel group (1 primary, 1 replica, 3 Sentinels), from the same `redis-server` binary as
the embedded Redis (`relay.embedded_redis.find_redis_server`).

Each run gets a fresh directory (a node's nodes.conf and a Sentinel's file persist, and a
restarted node would rejoin its old cluster) and free ports at or below 55535 (a cluster
node's bus listens on port + 10000). The cluster is formed with redis-py alone (no
redis-cli), with `cluster-require-full-coverage no` so that the failover of one shard
leaves the others serving.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import redis

from relay.embedded_redis import find_redis_server

__all__ = ["ClusterServers", "SentinelGroup", "free_low_port", "on_cluster"]

SLOTS = 16384


def free_low_port(taken: set[int]) -> int:
    """A port free on 127.0.0.1 whose +10000 (cluster bus) is free too, at most 55535."""
    for _ in range(1000):
        port = random.randint(20000, 55535)
        if port in taken or port + 10000 in taken:
            continue
        if _bindable(port) and _bindable(port + 10000):
            taken.update({port, port + 10000})
            return port
    raise RuntimeError("no free loopback port pair")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _command(client: redis.Redis, *args: object) -> Any:
    """`client.execute_command(*args)` (untyped in redis-py's sync client)."""
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def wait_for(check: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError, OSError):
            if check():
                return
        time.sleep(0.05)
    raise TimeoutError(f"redis fleet: {what} not within {within} s")


class _Servers:
    """redis-server processes, each with its own config file and folder under `root`."""

    def __init__(self, root: Path | None, password: str | None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="redis-fleet-", dir=root))
        self.password = password
        self.binary = find_redis_server()
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self._taken: set[int] = set()

    def _spawn(self, port: int, lines: Sequence[str], *, sentinel: bool = False) -> None:
        folder = self.root / str(port)
        folder.mkdir()
        config = folder / ("sentinel.conf" if sentinel else "redis.conf")
        base = ["bind 127.0.0.1", f"port {port}", f'dir "{folder}"']
        if not sentinel:
            base += ['save ""', "appendonly no", "repl-diskless-sync-delay 0"]
            base += ["repl-ping-replica-period 1"]
        config.write_text("\n".join([*base, *lines, ""]))
        args = [str(self.binary), str(config)] + (["--sentinel"] if sentinel else [])
        with (folder / "log").open("wb") as log:
            self.processes[port] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1", port=port, password=self.password, socket_timeout=2,
            socket_connect_timeout=2, decode_responses=True,
        )  # fmt: skip

    def _wait_listening(self, ports: Sequence[int]) -> None:
        for port in ports:
            wait_for(lambda p=port: self._pings(p), 10, f"redis-server on {port}")  # type: ignore[misc]

    def _pings(self, port: int) -> bool:
        process = self.processes[port]
        if process.poll() is not None:
            log = (self.root / str(port) / "log").read_text(errors="replace")[-1500:]
            raise RuntimeError(f"redis-server on {port} exited: {log}")
        with self.client(port) as c:
            return bool(c.ping())

    def kill(self, port: int) -> None:
        """kill -9, as a crashed host."""
        process = self.processes[port]
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(10)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        subprocess.run(["rm", "-rf", str(self.root)], check=False)


class ClusterServers(_Servers):
    """A 3-primary, 3-replica Redis Cluster on 127.0.0.1 (`cluster-node-timeout` 1 s).

    `password`: every node requires it (`requirepass`, and `masterauth` for its replica);
    `acl_user`: (name, password) of an ACL user, added to every node, with the default user
    left as `password` says.
    """

    def __init__(
        self,
        root: Path | None = None,
        *,
        password: str | None = None,
        acl_user: tuple[str, str] | None = None,
    ) -> None:
        super().__init__(root, password)
        self.acl_user = acl_user
        self.ports = [free_low_port(self._taken) for _ in range(6)]

    @property
    def url(self) -> str:
        """One node's URL: enough for a client to discover the others."""
        return self.urls[0]

    @property
    def urls(self) -> list[str]:
        auth = f"{self.acl_user[0]}:{self.acl_user[1]}@" if self.acl_user else ""
        if not auth and self.password:
            auth = f":{self.password}@"
        return [f"redis://{auth}127.0.0.1:{port}" for port in self.ports]

    def start(self) -> ClusterServers:
        lines = [
            "cluster-enabled yes",
            "cluster-config-file nodes.conf",
            "cluster-node-timeout 1000",
            "cluster-require-full-coverage no",
        ]
        if self.password:
            lines += [f"requirepass {self.password}", f"masterauth {self.password}"]
        if self.acl_user:
            name, secret = self.acl_user
            lines.append(f"user {name} on >{secret} ~* &* +@all")
        for port in self.ports:
            self._spawn(port, lines)
        try:
            self._wait_listening(self.ports)
            self._form()
        except BaseException:
            self.stop()
            raise
        return self

    def _form(self) -> None:
        """The recipe of the redis-cli --cluster create, with redis-py: slots in three
        ranges, one epoch each, MEET, then each replica REPLICATEs its primary."""
        clients = [self.client(port) for port in self.ports]
        primaries, replicas = clients[:3], clients[3:]
        try:
            for i, c in enumerate(primaries):
                end = SLOTS if i == 2 else (i + 1) * (SLOTS // 3)
                _command(c, "CLUSTER", "ADDSLOTS", *range(i * (SLOTS // 3), end))
            for i, c in enumerate(clients):
                _command(c, "CLUSTER", "SET-CONFIG-EPOCH", i + 1)
            for port in self.ports[1:]:
                _command(clients[0], "CLUSTER", "MEET", "127.0.0.1", port)
            wait_for(
                lambda: all(len(_command(c, "CLUSTER", "NODES").splitlines()) == 6
                            for c in clients),
                15, "every node knowing the 6",
            )  # fmt: skip
            for primary, replica in zip(primaries, replicas, strict=True):
                primary_id = _command(primary, "CLUSTER", "MYID")
                wait_for(
                    lambda r=replica, p=primary_id: bool(  # type: ignore[misc]
                        _command(r, "CLUSTER", "REPLICATE", p)
                    ),
                    15, "a replica taking its primary",
                )  # fmt: skip
            self.wait_healthy(clients)
        finally:
            for c in clients:
                c.close()

    def wait_healthy(
        self,
        clients: Sequence[redis.Redis] | None = None,
        within: float = 20,
        *,
        replicas: bool = True,
    ) -> None:
        """cluster_state:ok on every live node, every replica's link up, and every shard
        listed in CLUSTER SLOTS (a client maps slots from there) with a primary, and with
        its replica unless `replicas` is false (after a failover the promoted one has
        none)."""
        own = clients is None
        live = [p for p in self.ports if self.processes[p].poll() is None]
        clients = clients or [self.client(port) for port in live]
        try:

            def healthy() -> bool:
                for c in clients:
                    if "cluster_state:ok" not in _command(c, "CLUSTER", "INFO"):
                        return False
                    info = c.info("replication")
                    if info["role"] == "slave" and info.get("master_link_status") != "up":
                        return False
                slots = _command(clients[0], "CLUSTER", "SLOTS")
                least = 4 if replicas else 3
                return bool(slots) and all(len(entry) >= least for entry in slots)

            wait_for(healthy, within, "a healthy cluster")
        finally:
            if own:
                for c in clients:
                    c.close()

    def primaries(self) -> list[int]:
        """Ports of the live nodes serving slots now."""
        found = []
        for port in self.ports:
            if self.processes[port].poll() is None:
                with self.client(port) as c:
                    if c.info("replication")["role"] == "master":
                        found.append(port)
        return found

    def primary_of(self, key: str) -> int:
        """Port of the live primary that serves `key`'s slot."""
        live = next(p for p in self.ports if self.processes[p].poll() is None)
        with self.client(live) as c:
            slot = _command(c, "CLUSTER", "KEYSLOT", key)
            for start, end, primary, *_ in _command(c, "CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    return int(primary[1])
        raise LookupError(key)

    def replica_of(self, primary: int) -> int:
        with self.client(primary) as c:
            info = c.info("replication")
        return int(info["slave0"]["port"])

    def fail_primary(self, port: int, within: float = 20) -> int:
        """kill -9 the primary on `port`; wait until its replica serves its slots and the
        cluster is ok again. The promoted replica's port."""
        replica = self.replica_of(port)
        self.kill(port)

        def promoted() -> bool:
            with self.client(replica) as c:
                return bool(c.info("replication")["role"] == "master")

        wait_for(promoted, within, f"the replica {replica} promoted")
        self.wait_healthy(within=within, replicas=False)
        return replica

    def flush(self) -> None:
        """FLUSHALL on every live primary (what a cluster client's flushall does)."""
        for port in self.primaries():
            with self.client(port) as c:
                c.flushall()


class SentinelGroup(_Servers):
    """1 primary, 1 replica and 3 Sentinels (quorum 2, down after 1 s) on 127.0.0.1,
    watching the service `SERVICE`. With `password`, the primary and the replica require it
    (`requirepass` + `masterauth`) and the Sentinels use it (`auth-pass`); the Sentinels
    themselves need none."""

    SERVICE = "relaymaster"

    def __init__(self, root: Path | None = None, *, password: str | None = None) -> None:
        super().__init__(root, password)
        self.primary, self.replica = (free_low_port(self._taken) for _ in range(2))
        self.sentinel_ports = [free_low_port(self._taken) for _ in range(3)]

    @property
    def sentinels(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.sentinel_ports]

    @property
    def service(self) -> str:
        """`redis.service`: the name, in a URL with the password when there is one."""
        if self.password:
            return f"redis://:{self.password}@{self.SERVICE}/0"
        return self.SERVICE

    def start(self) -> SentinelGroup:
        auth = (
            [f"requirepass {self.password}", f"masterauth {self.password}"] if self.password else []
        )
        self._spawn(self.primary, auth)
        self._spawn(self.replica, [*auth, f"replicaof 127.0.0.1 {self.primary}"])
        watch = [
            f"sentinel monitor {self.SERVICE} 127.0.0.1 {self.primary} 2",
            f"sentinel down-after-milliseconds {self.SERVICE} 1000",
            f"sentinel failover-timeout {self.SERVICE} 5000",
            f"sentinel parallel-syncs {self.SERVICE} 1",
        ]
        if self.password:
            watch.append(f"sentinel auth-pass {self.SERVICE} {self.password}")
        for port in self.sentinel_ports:
            self._spawn(port, watch, sentinel=True)
        try:
            self._wait_listening([self.primary, self.replica])
            for port in self.sentinel_ports:
                wait_for(lambda p=port: self._sentinel_pings(p), 10, f"sentinel on {port}")  # type: ignore[misc]
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def _sentinel_pings(self, port: int) -> bool:
        with redis.Redis(host="127.0.0.1", port=port, socket_timeout=2) as c:
            return bool(c.ping())

    def _master_state(self, port: int) -> dict[str, str]:
        with redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, decode_responses=True) as c:
            return dict(_command(c, "SENTINEL", "MASTER", self.SERVICE))

    def current_primary(self) -> int:
        """The primary's port as the Sentinels name it."""
        with redis.Redis(host="127.0.0.1", port=self.sentinel_ports[0], socket_timeout=2) as c:
            _, port = _command(c, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.SERVICE)
        return int(port)

    def wait_healthy(self, within: float = 20) -> None:
        """Every live Sentinel sees the primary, a replica and the other Sentinels."""

        def healthy() -> bool:
            for port in self.sentinel_ports:
                state = self._master_state(port)
                if int(state["num-slaves"]) < 1 or int(state["num-other-sentinels"]) < 2:
                    return False
                if "s_down" in state["flags"] or "o_down" in state["flags"]:
                    return False
            return True

        wait_for(healthy, within, "Sentinels seeing primary, replica and each other")

    def fail_primary(self, within: float = 20) -> int:
        """kill -9 the primary; wait until the Sentinels name the replica. Its port."""
        old = self.current_primary()
        self.kill(old)
        wait_for(lambda: self.current_primary() != old, within, "the Sentinels' failover")
        new = self.current_primary()
        with self.client(new) as c:
            wait_for(lambda: c.info("replication")["role"] == "master", within, "a new primary")
        return new


def on_cluster() -> bool:
    """`RELAY_TEST_REDIS=cluster`: the `redis` fixture and the relays the tests start
    (`relay_process.write_config`) use the session's Cluster instead of one server."""
    return os.environ.get("RELAY_TEST_REDIS", "") == "cluster"
