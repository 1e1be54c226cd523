"""The Redis client the whole relay shares, and loading of the Lua scripts beside the code.

A Redis URL may carry a password (`redis://user:password@host`, or `?password=` in the
query): whatever shows a URL to a person (logs, errors, CLI output) shows `redact_url(url)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

import redis
import redis.asyncio as aioredis
import structlog
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.connection import SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool
from redis.backoff import EqualJitterBackoff
from redis.cluster import ClusterNode as SyncClusterNode
from redis.cluster import RedisCluster as SyncRedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    ClusterDownError,
    NoScriptError,
    RedisClusterException,
    RedisError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.sentinel import Sentinel as SyncSentinel
from redis.typing import EncodableT

from relay.config import RedisSettings
from relay.errors import ConfigError, NotReplicated, StoreUnavailable
from relay.redis_connections import guarded

if TYPE_CHECKING:
    from relay.config import RedisSettings

__all__ = [
    "Along",
    "Wait",
    "connect",
    "connect_blocking",
    "connect_settings",
    "describe",
    "failure_text",
    "hide_secrets",
    "insecure_settings",
    "insecure_url",
    "load_script",
    "redact_secret",
    "redact_url",
    "script_with",
    "stage_script",
    "store_errors",
    "text",
    "text_dict",
]

_HIDDEN = "***"

log = structlog.get_logger("relay.redis")


def connect(url: str, *, timeout: float, max_connections: int = 64) -> aioredis.Redis:
    """A bounded pool that waits for a free connection instead of raising when exhausted.

    `redis://`, `rediss://` (TLS; `?ssl_ca_certs=PATH` for a private CA) and
    `unix:///path/to/socket?db=N`. A URL that cannot be used is a ConfigError naming
    `redis.url`, never showing the password.
    """
    try:
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )
    except ValueError as exc:
        raise ConfigError(f"redis.url: {redact_secret(str(exc), url)}") from None
    pool.connection_class = guarded(pool.connection_class)
    return aioredis.Redis.from_pool(pool)  # the client owns (and closes) its pool


def connect_settings(
    settings: RedisSettings, *, max_connections: int = 64, url: str | None = None
) -> aioredis.Redis:
    """The client of the configured Redis: one server (`redis.url`, or `url` given for the
    embedded one), a Redis Cluster (`redis.cluster_nodes`) or the primary a group of
    Sentinels names (`redis.sentinels` + `redis.service`).

    Each is bounded (at most `max_connections` commands in flight, more wait) and uses the
    `redis.timeout` deadline per call. A failover is ridden out inside the client with a
    few short retries; what is left reaches the caller as a RedisError (never a
    cluster-only exception type), so `store_errors` and the submission path answer 4xx.

    The relay's stores are typed against `redis.asyncio.Redis`. The cluster client has the
    same command methods but is not its subclass: it is returned as that type here, the
    one place that knows (see `_ClusterClient`).
    """
    timeout = settings.timeout.seconds
    if settings.cluster_nodes:
        cluster = _cluster(settings.cluster_nodes, timeout, max_connections)
        return cast(aioredis.Redis, cluster)  # same commands; see the docstring
    if settings.sentinels:
        return _sentinel_primary(settings, timeout, max_connections)
    return connect(url or settings.url, timeout=timeout, max_connections=max_connections)


def connect_blocking(settings: RedisSettings, timeout: float) -> redis.Redis:
    """A blocking client of the configured Redis (one server, Cluster or Sentinel), for the
    supervisor of `relay run`, which runs no event loop while it has children. Its calls
    last `timeout` at most; no pool bound (one caller)."""
    common: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    try:
        if settings.cluster_nodes:
            urls = settings.cluster_nodes
            nodes = [SyncClusterNode(*_host_port(url)) for url in urls]  # type: ignore[no-untyped-call]
            cluster = SyncRedisCluster(
                startup_nodes=nodes, require_full_coverage=False, **common, **_options(urls[0])
            )
            return cast(redis.Redis, cluster)  # same commands, as in connect_settings
        if settings.sentinels:
            name, addresses, sentinel_options, primary_options = _sentinel_setup(settings)
            sentinel = SyncSentinel(  # type: ignore[no-untyped-call]
                addresses,
                sentinel_kwargs={**sentinel_options, **common},
                **common,
                **primary_options,
            )
            primary_client: redis.Redis = sentinel.master_for(name)  # type: ignore[no-untyped-call]
            return primary_client
        return redis.Redis.from_url(settings.url, **common)
    except (ValueError, TypeError, RedisClusterException) as exc:
        raise ConfigError(f"redis: {hide_secrets(str(exc), settings)}") from None


def describe(settings: RedisSettings, *, url: str | None = None) -> str:
    """Where the settings point, for a person: no password in it."""
    if settings.cluster_nodes:
        return "cluster " + ", ".join(redact_url(node) for node in settings.cluster_nodes)
    if settings.sentinels:
        name, _ = _service(settings.service)
        shown = ", ".join(redact_url(s) if "://" in s else s for s in settings.sentinels)
        return f"sentinel service {name!r} via {shown}"
    return redact_url(url or settings.url)


def hide_secrets(message: str, settings: RedisSettings) -> str:
    """`message` without any password of the settings' URLs."""
    for url in (settings.url, settings.service, *settings.cluster_nodes, *settings.sentinels):
        if "://" in url:
            message = redact_secret(message, url)
    return message


def failure_text(exc: BaseException, settings: RedisSettings) -> str:
    """Why connecting failed, for one line: no password, and not the Sentinel clients'
    long reprs that redis-py puts after a MasterNotFoundError's first words."""
    message = str(exc)
    if isinstance(exc, MasterNotFoundError):
        message = message.partition(" : ")[0]
        if " : " in str(exc):
            message += " (no Sentinel could be reached)"
    return hide_secrets(message, settings)


def insecure_settings(settings: RedisSettings) -> str | None:
    """`insecure_url` of the first URL that is unsafe over a network, named by its key. With
    Sentinels, the primary (whose address they give) is judged at the Sentinels' hosts."""
    named = [("redis.url", settings.url)]
    named += [("redis.cluster_nodes", node) for node in settings.cluster_nodes]
    if settings.sentinels:
        _, primary = _service(settings.service)
        for sentinel in settings.sentinels:
            host, _ = _host_port(_sentinel_url(sentinel))
            named.append(("redis.service", _with_host(primary, host)))
    for key, url in named:
        if url and (problem := insecure_url(url)):
            return f"{key}: {problem}"
    return None


# How a failover is ridden out: backoff doubling from 100 ms to 0.5 s (half of it jitter),
# a bounded number of tries (about 2.4 s in all: a kill -9'd primary is replaced in about
# 2.5 s with `cluster-node-timeout 1000` or Sentinel's `down-after-milliseconds 1000`); the
# caller's own deadline (`redis.timeout` on the submission path) may end it sooner.
_FAILOVER_TRIES = 8


def _failover_retry(tries: int = _FAILOVER_TRIES) -> Retry:
    return Retry(EqualJitterBackoff(cap=0.5, base=0.05), tries)


# What a shard's failover looks like to a cluster client (redis.exceptions.TimeoutError is
# the socket's deadline, not asyncio's).
_FAILOVER_ERRORS = (
    RedisConnectionError,
    RedisTimeoutError,
    ClusterDownError,
    TryAgainError,
    SlotNotCoveredError,
)


class _ClusterPipeline(ClusterPipeline):
    """Scripts go in with `stage_script` (redis-py blocks `evalsha` on cluster pipelines;
    EVALSHA by `execute_command` is routed by its keys, one slot each)."""

    async def execute(
        self, raise_on_error: bool = True, allow_redirections: bool = True
    ) -> list[Any]:
        client = cast(_ClusterClient, self.cluster_client)
        await client.take(client.pipeline_budget)
        try:
            return await super().execute(raise_on_error, allow_redirections)
        except SlotNotCoveredError as exc:  # not a RedisError: a failover's error
            raise ClusterDownError(str(exc)) from None
        finally:
            client.pipeline_budget.release()


class _ClusterClient(RedisCluster):
    """RedisCluster whose errors in a failover are all RedisError, and whose commands wait
    for a free place (the cluster's own per-node pools raise when full, where the single
    server's pool waits). Its own attributes must not take a command's name (`wait`)."""

    def __init__(self, *, wait: float, limit: int, **kwargs: Any) -> None:
        # Commands and pipelines have a budget each: a pipeline resends a redirected command
        # through execute_command, so one shared budget could wait on itself.
        super().__init__(max_connections=2 * limit, **kwargs)
        # The nodes it finds later are made with these options, those it starts from
        # were made already: both get writes that fail as ConnectionError.
        options = self.nodes_manager.connection_kwargs
        options["connection_class"] = guarded(options["connection_class"])
        for node in self.nodes_manager.startup_nodes.values():
            node.connection_class = guarded(node.connection_class)
        self.budget_wait = wait
        self.backoff = EqualJitterBackoff(cap=0.5, base=0.05)
        self.command_budget = asyncio.Semaphore(limit)
        self.pipeline_budget = asyncio.Semaphore(limit)

    async def take(self, budget: asyncio.Semaphore) -> None:
        """A place in `budget` (the caller releases it), waiting up to `budget_wait`."""
        try:
            async with asyncio.timeout(self.budget_wait):
                await budget.acquire()
        except TimeoutError:
            raise RedisConnectionError("no free connection to the cluster in time") from None

    async def initialize(self, *args: Any, **kwargs: Any) -> RedisCluster:
        try:
            return await super().initialize(*args, **kwargs)
        except RedisClusterException as exc:  # "cannot be connected": retried as a ConnectionError
            raise RedisConnectionError(str(exc)) from None

    async def execute_command(self, *args: EncodableT, **kwargs: Any) -> Any:
        """The library retries a failed node at once, a few times (its Retry's backoff is
        not used by the cluster client): a dead primary's shard would fail in milliseconds
        while its replica takes over in seconds. Here the tries go on with a backoff until
        `budget_wait` (`redis.timeout`) has passed since the first."""
        deadline = time.monotonic() + self.budget_wait
        failures = 0
        await self.take(self.command_budget)
        try:
            while True:
                try:
                    return await super().execute_command(*args, **kwargs)
                except (AuthenticationError, AuthorizationError):
                    raise  # a ConnectionError too, but no failover ends it
                except _FAILOVER_ERRORS as exc:
                    failures += 1
                    pause = self.backoff.compute(failures)  # stateless: shared by all calls
                    if time.monotonic() + pause >= deadline:
                        if isinstance(exc, SlotNotCoveredError):  # not a RedisError
                            raise ClusterDownError(str(exc)) from None
                        raise
                    await asyncio.sleep(pause)
        finally:
            self.command_budget.release()

    def pipeline(
        self, transaction: Any | None = None, shard_hint: Any | None = None
    ) -> ClusterPipeline:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # raises as the library does
        return _ClusterPipeline(self, transaction)  # type: ignore[abstract]  # as the library does


def _cluster(urls: Sequence[str], timeout: float, limit: int) -> _ClusterClient:
    """The first URL's user, password and TLS options apply to every node (a cluster's
    nodes share them); the others are only more ways in."""
    try:
        options = _options(urls[0])
        nodes = [_host_port(url) for url in urls]
        return _ClusterClient(
            wait=timeout,
            limit=limit,
            startup_nodes=[ClusterNode(host, port) for host, port in nodes],
            require_full_coverage=False,  # a failover in one shard leaves the others serving
            retry=_failover_retry(),
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            **options,
        )
    except (ValueError, TypeError, RedisClusterException) as exc:
        reason = str(exc)
        for url in urls:
            reason = redact_secret(reason, url)
        raise ConfigError(f"redis.cluster_nodes: {reason}") from None


class _SentinelPrimary(aioredis.Redis):
    """The primary's client, which also closes its connections to the Sentinels."""

    sentinel_group: Sentinel | None = None  # not `sentinel`: that is a command

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.sentinel_group is not None:
            for client in self.sentinel_group.sentinels:
                await client.aclose()


class _BlockingSentinelPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """Connections to whichever server the Sentinels name as primary, at most
    `max_connections`; a caller past that waits (up to `timeout`) as with one server."""

    def __init__(self, service_name: str, sentinel_manager: Sentinel, **kwargs: Any) -> None:
        super().__init__(service_name, sentinel_manager, **kwargs)  # type: ignore[no-untyped-call]
        self.connection_class = guarded(self.connection_class)


def _sentinel_primary(settings: RedisSettings, timeout: float, limit: int) -> aioredis.Redis:
    try:
        name, addresses, sentinel_options, master_options = _sentinel_setup(settings)
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            addresses,
            sentinel_kwargs={
                **sentinel_options,
                "socket_timeout": timeout,
                "socket_connect_timeout": timeout,
            },
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=_failover_retry(3),  # also for connecting: MasterNotFoundError mid-failover
            **master_options,
        )
        client = sentinel.master_for(
            name,
            redis_class=_SentinelPrimary,
            connection_pool_class=_BlockingSentinelPool,
            max_connections=limit,
            timeout=timeout,
        )
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"redis.sentinels: {hide_secrets(str(exc), settings)}") from None
    assert isinstance(client, _SentinelPrimary)
    client.sentinel_group = sentinel
    for asked in sentinel.sentinels:  # asked again in a failover: the same writes
        asked.connection_pool.connection_class = guarded(asked.connection_pool.connection_class)
    return client


def _sentinel_setup(
    settings: RedisSettings,
) -> tuple[str, list[tuple[str, int]], dict[str, Any], dict[str, Any]]:
    """(service name, Sentinel addresses, options for the Sentinels, options for the
    primary) of the settings, for the async and the blocking client alike."""
    name, primary = _service(settings.service)
    addresses = [_host_port(_sentinel_url(s)) for s in settings.sentinels]
    own = next((s for s in settings.sentinels if "://" in s), "")
    return name, addresses, _options(own) if own else {}, _options(primary)


def _options(url: str) -> dict[str, Any]:
    """Client options of a URL (user, password, db, TLS) without its address."""
    options: dict[str, Any] = dict(parse_url(url))
    if options.pop("connection_class", None) is SSLConnection:
        options["ssl"] = True
    options.pop("host", None)
    options.pop("port", None)
    return options


def _service(service: str) -> tuple[str, str]:
    """(master name, URL for the primary's options) of `redis.service`. The name is read as
    written (a URL's host is lowercased by the parsers; Sentinel names are not)."""
    if "://" not in service:
        return service, f"redis://{service}"
    authority = urlsplit(service).netloc.rpartition("@")[2]
    return authority.rpartition(":")[0] if ":" in authority else authority, service


def _sentinel_url(entry: str) -> str:
    """A `redis.sentinels` entry as a URL (`host:port` is one without TLS or password)."""
    return entry if "://" in entry else f"redis://{entry}"


def _with_host(url: str, host: str) -> str:
    parts = urlsplit(url)
    user, has_at, _ = parts.netloc.rpartition("@")
    return parts._replace(netloc=f"{user}@{host}" if has_at else host).geturl()


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if not parts.hostname:
        raise ValueError("no host")
    return parts.hostname, parts.port or 6379


def redact_url(url: str) -> str:
    """`url` with its password (in the authority or a `password=` parameter) as `***`."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<redis.url: not a URL>"
    user, has_at, host = parts.netloc.rpartition("@")
    netloc = parts.netloc
    if has_at:
        name, has_colon, _ = user.partition(":")
        netloc = f"{name}:{_HIDDEN}@{host}" if has_colon else f"{name}@{host}"
    query = parts.query
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(key == "password" for key, _ in pairs):
        hidden = [(key, _HIDDEN if key == "password" else value) for key, value in pairs]
        query = urlencode(hidden, safe="*/:")
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    # Not urlunsplit: it turns `unix:///path` (empty authority) into `unix:/path`.
    shown = f"{parts.scheme}://{netloc}{parts.path}"
    return shown + (f"?{query}" if query else "") + (f"#{parts.fragment}" if parts.fragment else "")


def redact_secret(message: str, url: str) -> str:
    """`message` (an error's text) without the URL's password in any spelling."""
    for secret in _passwords(url):
        for spelling in {secret, quote(secret, safe=""), unquote(secret)}:
            if spelling:
                message = message.replace(spelling, _HIDDEN)
    return message


def insecure_url(url: str) -> str | None:
    """Why a Redis URL is unsafe to use over a network, or None: a remote `redis://` sends
    the password and every message in clear, and a server without a password is open to
    whoever reaches it. Unix sockets and loopback addresses stay on this machine."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return None  # refused when connecting
    if parts.scheme not in ("redis", "rediss") or _loopback(host):
        return None
    problems = []
    if parts.scheme == "redis":
        problems.append("no TLS (use rediss://)")
    if not _passwords(url):
        problems.append("no password (use an ACL user: rediss://user:password@host)")
    return "; ".join(problems) or None


def _passwords(url: str) -> list[str]:
    try:
        parts = urlsplit(url)
        found = [parts.password or ""]
    except ValueError:
        return []
    found += [value for key, value in parse_qsl(parts.query) if key == "password"]
    return [p for p in found if p]


def _loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_script(redis: aioredis.Redis, beside: str, name: str) -> AsyncScript:
    """Register `name` (a .lua file in the folder of module file `beside`)."""
    source = (Path(beside).parent / name).read_text(encoding="utf-8")
    return redis.register_script(source)


def text(value: object) -> str:
    """A Redis reply (bytes: the client does not decode, bodies are binary) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def text_dict(raw: object) -> dict[str, str]:
    assert isinstance(raw, dict)
    return {text(k): text(v) for k, v in raw.items()}


@contextlib.contextmanager
def store_errors() -> Iterator[None]:
    """Redis errors inside become StoreUnavailable: callers handle one error of ours."""
    try:
        yield
    except RedisError as exc:
        raise StoreUnavailable(f"redis: {exc}") from None


@dataclass(frozen=True)
class Along:
    """Commands of another store sent in the round trip of a script (`script_with`): the
    bookkeeping that follows a step (the quota commit and the trace with an enqueue, the
    traffic count with the end of a delivery) costs no round trip of its own.

    They run after the script whatever its result (a pipeline, not a transaction), so only
    what may be lost or done once too often rides along: a failure is logged under `event`,
    never raised.
    """

    event: str
    add: Callable[[Pipeline], object]
    """Adds the commands to the pipeline (their replies are not read)."""
    fields: dict[str, str] = field(default_factory=dict)
    """For the log line of a failure."""
    again: Callable[[], Awaitable[object]] | None = None
    """For commands that run a script (EVALSHA): the same on their own, run when Redis did
    not know the script (restarted, flushed); their own call loads it."""


@dataclass(frozen=True)
class Wait:
    """How many replicas a write must reach (Redis WAIT) before it counts as done: a
    primary that dies right after a 250 then loses no acknowledged message's metadata."""

    replicas: int
    timeout: float
    """Seconds WAIT may take; fewer replicas by then fail the write (the client retries)."""

    @classmethod
    def from_settings(cls, settings: RedisSettings) -> Wait | None:
        if not settings.wait_replicas:
            return None
        return cls(settings.wait_replicas, settings.wait_timeout.seconds)


def stage_script(
    pipe: Pipeline, script: AsyncScript, keys: Sequence[str], args: Sequence[EncodableT]
) -> None:
    """Add a run of `script` (EVALSHA) to a pipeline, of one server or of a cluster (whose
    pipeline has no `evalsha` method but routes the command by its keys)."""
    pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)


async def script_with(
    redis: aioredis.Redis,
    script: AsyncScript,
    keys: Sequence[str],
    args: Sequence[EncodableT],
    along: Sequence[Along] = (),
    wait: Wait | None = None,
) -> object:
    """Run `script`, and the commands of `along` after it, in one round trip; the script's
    reply (its errors raise, as RedisError). A script Redis does not know (restarted,
    flushed) is loaded and run again on its own: `along` ran already.

    With `wait`, WAIT follows the script on its connection (on a cluster: to the primary
    of the script's keys) and fewer replicas than asked raise NotReplicated (the script
    ran: the caller undoes it or lets it stand).

    On a cluster, `along` goes to the primaries of its own keys in the same moment (the
    pipeline is split per node): it runs beside the script rather than after it, which is
    the same for bookkeeping of other keys.
    """
    if not along and wait is None:
        return await script(keys=list(keys), args=list(args))
    replies = await _in_one_trip(redis, script, keys, args, along, wait)
    if isinstance(replies[0], NoScriptError):
        # Loaded (on every primary of a cluster), then run again with its WAIT on one
        # connection: a WAIT on another connection would not wait for this write.
        await redis.script_load(script.script)
        replies = await _in_one_trip(redis, script, keys, args, (), wait)
    first = replies[0]
    if isinstance(first, Exception):
        raise first
    if wait is not None:
        _check_wait(replies[1], wait)
    return first


async def _in_one_trip(
    redis: aioredis.Redis,
    script: AsyncScript,
    keys: Sequence[str],
    args: Sequence[EncodableT],
    along: Sequence[Along],
    wait: Wait | None,
) -> list[object]:
    """One pipeline: the script, its WAIT, then `along` (whose failures are dealt with
    here); the replies, the script's first and the WAIT's second."""
    async with redis.pipeline(transaction=False) as pipe:
        stage_script(pipe, script, keys, args)
        if wait is not None:
            _stage_wait(redis, pipe, keys[0], wait)
        spans = []
        for extra in along:
            start = len(pipe)
            extra.add(pipe)
            spans.append((extra, start, len(pipe)))
        replies: list[object] = await pipe.execute(raise_on_error=False)
    for extra, start, end in spans:
        failed = [reply for reply in replies[start:end] if isinstance(reply, Exception)]
        if failed and extra.again is not None and isinstance(failed[0], NoScriptError):
            await extra.again()
        elif failed:
            log.warning(extra.event, error=str(failed[0]), **extra.fields)
    return replies


def _stage_wait(redis: aioredis.Redis, pipe: Pipeline, key: str, wait: Wait) -> None:
    command = ("WAIT", wait.replicas, int(wait.timeout * 1000))
    if isinstance(redis, RedisCluster):
        pipe.execute_command(*command, target_nodes=redis.get_node_from_key(key))
    else:
        pipe.execute_command(*command)


def _check_wait(reply: object, wait: Wait) -> None:
    if isinstance(reply, Exception) or not isinstance(reply, int):
        raise NotReplicated(f"redis: WAIT failed: {reply}")
    if reply < wait.replicas:
        raise NotReplicated(
            f"redis: the write reached {reply} of {wait.replicas} replicas in {wait.timeout:g} s"
        )
