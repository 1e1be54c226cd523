"""The application surface for real: the API routers on a FastAPI app served by uvicorn on
127.0.0.1, the SMTP listeners, a delivery worker and (optionally) the webhook dispatcher, all
sharing one SubmissionService, queue and event recorder in a real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import redis.asyncio as aioredis
import uvicorn
from fastapi import FastAPI

from quota import QuotaStore
from relay.accounts import AccountStore
from relay.accounts.api_keys import ApiKeys
from relay.clock import Clock, SystemClock
from relay.config import HostPort, Listener, Settings
from relay.delivery.egress_state import egress_state
from relay.delivery.mx import make_resolver
from relay.delivery.worker import DeliveryWorker
from relay.events import EventRecorder, event_recorder, webhook_dispatcher
from relay.queue import QueueStore
from relay.submission.server import start_listeners
from relay.submission.service import SubmissionService
from relay.tls import server_context
from relay.web.api import events as events_api
from relay.web.api import messages as messages_api
from relay.web.api.deps_apps import app_services
from tests.conftest import free_port
from tests.support.engine import delivery_settings
from tests.support.spool import temp_spool


def build_app() -> FastAPI:
    """What the web app does at merge: include the two routers."""
    app = FastAPI()
    app.include_router(messages_api.router)
    app.include_router(events_api.router)
    return app


@contextlib.asynccontextmanager
async def serve_http(app: Any, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn on a free port; yields its base URL."""
    port = free_port(host)
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", lifespan="off", ws="none", http="h11"
    )
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@dataclass
class AppStack:
    url: str
    smtp_port: int
    client_tls: ssl.SSLContext
    service: SubmissionService
    queue: QueueStore
    quota: QuotaStore
    events: EventRecorder
    keys: ApiKeys
    settings: Settings
    worker: DeliveryWorker

    def client(self, key: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=10
        )


def stack_settings(sink_address: str, **sections: Any) -> Settings:
    values: dict[str, Any] = {
        "delivery": delivery_settings(routes={"*": sink_address}, poll_interval="100ms"),
        "webhooks": {
            "allow_private_targets": True,
            "first_retry": "100ms",
            "max_retry": "400ms",
            "poll_interval": "50ms",
            "timeout": "2s",
        },
    }
    values.update(sections)
    return Settings(**values)


@contextlib.asynccontextmanager
async def app_stack(
    redis: aioredis.Redis,
    settings: Settings,
    server_cert: tuple[Any, Any],
    ca: Any,
    *,
    clock: Clock | None = None,
    deliver: bool = True,
    webhooks: bool = False,
) -> AsyncIterator[AppStack]:
    clock = clock or SystemClock()
    queue = QueueStore(redis, clock, temp_spool())
    quota = QuotaStore(redis, default_per_minute=1000, per_recipient=100)
    events = event_recorder(redis, settings, clock)
    worker = DeliveryWorker(
        queue=queue,
        settings=settings.delivery,
        resolver=make_resolver(settings.dns),
        clock=clock,
        egress_state=egress_state(redis, clock, settings.delivery),
        hostname="relay.test",
        quota=quota,
        events=events,
    )
    service = SubmissionService(
        accounts=AccountStore(redis, clock),
        queue=queue,
        quota=quota,
        settings=settings.submission,
        hostname="relay.test",
        clock=clock,
        store_timeout=2.0,
        on_queued=worker.wake,
        events=events,
    )
    listener = Listener(address=HostPort(host="127.0.0.1", port=free_port()), tls="starttls")
    servers = await start_listeners(
        listeners=[listener],
        settings=settings.submission,
        service=service,
        tls=server_context(*server_cert),
        hostname="relay.test",
    )
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)
    app = build_app()
    app.state.apps = app_services(redis, settings, service, clock)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop)) if deliver else None
    dispatching = (
        asyncio.create_task(webhook_dispatcher(redis, settings, clock).run(stop))
        if webhooks
        else None
    )
    try:
        async with serve_http(app) as url:
            yield AppStack(
                url,
                listener.address.port,
                client_tls,
                service,
                queue,
                quota,
                events,
                app.state.apps.keys,  # the app's: a revocation here ends its cached key
                settings,
                worker,
            )
    finally:
        stop.set()
        for task in (running, dispatching):
            if task is not None:
                await asyncio.wait_for(task, 15)
        for server in servers:
            server.close()
