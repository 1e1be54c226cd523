"""The webhook dispatcher: a part of its own in each relay process, beside delivery.

It never slows mail: it runs in its own tasks, reads the event streams delivery already wrote
(nothing is added to the delivery path), posts with its own HTTP client and deadline, and a
failing endpoint only delays that webhook's own cursor. At least once: the cursor moves after
the endpoint answered 2xx, so a crash in between posts the event again (receivers drop
repeated event ids). In order: one webhook's events go one at a time, in stream order; a
failure retries the same event with exponential back-off (`next_retry`) for
`webhooks.retry_for` (24 h), then gives it up (logged) and goes on. Several processes share
the work through a lease per webhook.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import socket
import time
from dataclasses import dataclass, replace

import httpx
import structlog

from relay.clock import Clock
from relay.config import WebhookSettings
from relay.errors import RelayError
from relay.events.errors import BadTarget
from relay.events.model import Event
from relay.events.signing import signature_header
from relay.events.stream import EventStream
from relay.events.targets import check_target
from relay.events.webhooks import Progress, Webhook, WebhookStore

__all__ = ["PostResult", "WebhookDispatcher", "next_retry", "post_event"]

log = structlog.get_logger("relay.webhooks")

BATCH = 100
"""Events read per pass over one webhook."""


def next_retry(attempts: int, *, first: float, cap: float) -> float:
    """Seconds to wait after the `attempts`-th failure in a row: first, 2×, 4×, … up to cap."""
    return float(min(cap, first * 2 ** max(0, attempts - 1)))


@dataclass(frozen=True)
class PostResult:
    ok: bool
    status: int | None
    error: str
    seconds: float


def payload(event: Event) -> bytes:
    return json.dumps(event.as_dict(), separators=(",", ":"), sort_keys=True).encode()


async def post_event(
    client: httpx.AsyncClient,
    hook: Webhook,
    event_id: str,
    body: bytes,
    *,
    allow_private: bool,
    now: float,
) -> PostResult:
    """POST one signed event; any 2xx is success, anything else (or no answer) a failure."""
    started = time.monotonic()
    try:
        await check_target(hook.url, allow_private=allow_private)
        response = await client.post(
            hook.url,
            content=body,
            headers={
                "Content-Type": "application/json",
                "User-Agent": "relay-webhooks/1",
                "Relay-Event-Id": event_id,
                "Relay-Signature": signature_header(hook.secret, int(now), body),
            },
        )
    except BadTarget as exc:
        return PostResult(False, None, str(exc), time.monotonic() - started)
    except httpx.HTTPError as exc:
        why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return PostResult(False, None, why, time.monotonic() - started)
    ok = 200 <= response.status_code < 300
    error = "" if ok else f"HTTP {response.status_code}"
    return PostResult(ok, response.status_code, error, time.monotonic() - started)


class WebhookDispatcher:
    def __init__(
        self,
        *,
        store: WebhookStore,
        stream: EventStream,
        settings: WebhookSettings,
        clock: Clock,
        node: str | None = None,
    ) -> None:
        self._store = store
        self._stream = stream
        self._settings = settings
        self._clock = clock
        self._owner = f"{node or socket.gethostname()}:{os.getpid()}:{id(self):x}"
        """Whose lease a webhook's is: this process of this node (`node.id`)."""
        self._running: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._lease_for = settings.timeout.seconds * 2 + 5
        """Renewed before each POST: a dead process's webhooks wait this long at most."""

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            timeout=self._settings.timeout.seconds, follow_redirects=False, trust_env=False
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Serve every webhook until `stop`; Redis trouble is logged and retried."""
        async with self._client() as client:
            try:
                while not stop.is_set():
                    try:
                        await self.start_due(client)
                    except RelayError as exc:
                        log.error("webhooks.unavailable", error=str(exc))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), self._settings.poll_interval.seconds)
            finally:
                running = list(self._running.values())
                for task in running:
                    task.cancel()
                await asyncio.gather(*running, return_exceptions=True)

    async def start_due(self, client: httpx.AsyncClient) -> None:
        """Start serving each webhook that is not being served by this process already."""
        for account, hook_id in await self._store.everyone():
            if (account, hook_id) in self._running:
                continue
            key = (account, hook_id)
            task = asyncio.create_task(self._serve(client, account, hook_id))
            self._running[key] = task
            task.add_done_callback(functools.partial(self._done, key))

    def _done(self, key: tuple[str, str], _: asyncio.Task[None]) -> None:
        self._running.pop(key, None)

    async def _serve(self, client: httpx.AsyncClient, account: str, hook_id: str) -> None:
        try:
            async with self._slots:
                hook = await self._store.get(account, hook_id)
                if not await self._store.lease(hook, self._owner, self._lease_for):
                    return
                try:
                    await self.serve(client, hook)
                finally:
                    await self._store.unlease(hook, self._owner)
        except RelayError as exc:  # removed meanwhile, or Redis trouble: next round
            log.warning("webhooks.serve_failed", account=account, webhook=hook_id, error=str(exc))

    async def serve(self, client: httpx.AsyncClient, hook: Webhook) -> None:
        """Post the webhook's pending events in order, until one fails or none is left."""
        progress = await self._store.progress(hook)
        if progress.next_at > self._clock.now():
            return
        events = await self._stream.since(hook.account, progress.cursor, BATCH)
        for event in events:
            if not hook.wants(event.kind):
                progress = replace(progress, cursor=event.id)
                continue
            if not await self._store.lease(hook, self._owner, self._lease_for):
                return  # lost (this process stalled past it): another dispatcher goes on
            now = self._clock.now()
            result = await post_event(
                client,
                hook,
                event.id,
                payload(event),
                allow_private=self._settings.allow_private_targets,
                now=now,
            )
            await self._store.note(hook, _entry(event, result, now, progress.attempts + 1))
            if result.ok:
                progress = Progress(cursor=event.id)
                await self._store.save(hook, progress)
                continue
            progress = self._failed(hook, event, progress, result, now)
            await self._store.save(hook, progress)
            if progress.cursor != event.id:
                return  # waits for its back-off
        if events:
            await self._store.save(hook, progress)

    def _failed(
        self, hook: Webhook, event: Event, progress: Progress, result: PostResult, now: float
    ) -> Progress:
        since = progress.failing_since if progress.failing_since is not None else now
        attempts = progress.attempts + 1
        if now - since >= self._settings.retry_for.seconds:
            log.error(
                "webhook.gave_up",
                account=hook.account,
                webhook=hook.id,
                event=event.id,
                attempts=attempts,
                error=result.error,
            )
            return Progress(cursor=event.id)
        wait = next_retry(
            attempts,
            first=self._settings.first_retry.seconds,
            cap=self._settings.max_retry.seconds,
        )
        log.warning(
            "webhook.failed",
            account=hook.account,
            webhook=hook.id,
            event=event.id,
            attempts=attempts,
            retry_in=wait,
            error=result.error,
        )
        return Progress(progress.cursor, since, attempts, now + wait)


def _entry(event: Event, result: PostResult, now: float, attempt: int) -> dict[str, object]:
    return {
        "at": now,
        "event": event.id,
        "kind": event.kind,
        "message_id": event.message_id,
        "attempt": attempt,
        "status": result.status,
        "ok": result.ok,
        "error": result.error,
        "seconds": round(result.seconds, 3),
    }
