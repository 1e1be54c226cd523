"""The Redis client the whole relay shares, and loading of the Lua scripts beside the code.

A Redis URL may carry a password (`redis://user:password@host`, or `?password=` in the
query): whatever shows a URL to a person (logs, errors, CLI output) shows `redact_url(url)`.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

import redis.asyncio as aioredis
import structlog
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError
from redis.typing import EncodableT

from relay.config import RedisSettings
from relay.errors import ConfigError, NotReplicated, StoreUnavailable

__all__ = [
    "Along",
    "Wait",
    "connect",
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
    return aioredis.Redis.from_pool(pool)  # the client owns (and closes) its pool


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
    async with redis.pipeline(transaction=False) as pipe:
        stage_script(pipe, script, keys, args)
        if wait is not None:
            _stage_wait(redis, pipe, keys[0], wait)
        skip = len(pipe)
        spans = []
        for extra in along:
            start = len(pipe)
            extra.add(pipe)
            spans.append((extra, start, len(pipe)))
        replies = await pipe.execute(raise_on_error=False)
    for extra, start, end in spans:
        failed = [reply for reply in replies[start:end] if isinstance(reply, Exception)]
        if failed and extra.again is not None and isinstance(failed[0], NoScriptError):
            await extra.again()
        elif failed:
            log.warning(extra.event, error=str(failed[0]), **extra.fields)
    first = replies[0]
    if isinstance(first, NoScriptError):
        first = await script(keys=list(keys), args=list(args))
        if wait is not None:
            replies = [first, await _wait_alone(redis, keys[0], wait)]
    elif isinstance(first, Exception):
        raise first
    if wait is not None:
        _check_wait(replies[skip - 1], wait)
    return first


def _stage_wait(redis: aioredis.Redis, pipe: Pipeline, key: str, wait: Wait) -> None:
    command = ("WAIT", wait.replicas, int(wait.timeout * 1000))
    if isinstance(redis, RedisCluster):
        pipe.execute_command(*command, target_nodes=redis.get_node_from_key(key))
    else:
        pipe.execute_command(*command)


async def _wait_alone(redis: aioredis.Redis, key: str, wait: Wait) -> object:
    """WAIT after a script that was run on its own (it loaded itself first)."""
    async with redis.pipeline(transaction=False) as pipe:
        _stage_wait(redis, pipe, key, wait)
        return (await pipe.execute(raise_on_error=False))[0]


def _check_wait(reply: object, wait: Wait) -> None:
    if isinstance(reply, Exception) or not isinstance(reply, int):
        raise NotReplicated(f"redis: WAIT failed: {reply}")
    if reply < wait.replicas:
        raise NotReplicated(
            f"redis: the write reached {reply} of {wait.replicas} replicas in {wait.timeout:g} s"
        )
