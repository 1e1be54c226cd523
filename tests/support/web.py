"""The web app over a real Redis, driven in-process through httpx (ASGI), and helpers to
log in as a customer or an operator the way a browser does (form, cookie, CSRF token)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis
from fastapi import FastAPI

from relay.accounts import AccountStore
from relay.app import quota_store
from relay.clock import Clock, SystemClock
from relay.config import Settings
from relay.queue import QueueStore
from relay.spool import Spool
from relay.submission.service import SubmissionService
from relay.web.api.deps_apps import app_services
from relay.web.app import create_app
from relay.web.auth import OperatorStore, Role
from relay.web.services import WebServices

OPERATOR_PASSWORD = "operator password 1"


def web_settings(tmp_path: Path, **sections: Any) -> Settings:
    spool = tmp_path / "spool"
    spool.mkdir(exist_ok=True)
    guard = {"delay_after": 100, "lock_after": 5, "ip_lock_after": 1000}
    return Settings(
        hostname="relay.test",
        spool={"dir": spool},
        http={"enabled": True, "secure_cookies": False, "secret_file": tmp_path / "http.key"},
        submission={"auth_guard": guard},
        delivery={"egress": [{"ip": "127.0.0.2", "helo": "out1.relay.test"},
                             {"ip": "127.0.0.3", "helo": "out2.relay.test"}]},
        **sections,
    )  # fmt: skip


def make_app(
    redis: aioredis.Redis, settings: Settings, clock: Clock | None = None, metrics: Any = None
) -> tuple[FastAPI, WebServices]:
    clock = clock or SystemClock()
    quota = quota_store(redis, settings)
    services = WebServices.build(redis, settings, clock, quota=quota)
    submission = SubmissionService(
        accounts=AccountStore(redis, clock),
        queue=QueueStore(redis, clock, Spool(settings.spool.dir)),
        quota=quota,
        settings=settings.submission,
        hostname=settings.hostname,
        clock=clock,
        store_timeout=2.0,
    )
    apps = app_services(redis, settings, submission, clock)
    return create_app(services, secret=b"k" * 32, apps=apps, metrics=metrics), services


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver", timeout=30
    )


async def add_operator(redis: aioredis.Redis, name: str, role: str) -> None:
    await OperatorStore(redis).add(name, OPERATOR_PASSWORD, Role(role), 0.0)


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "no CSRF field in the page"
    return match.group(1)


async def log_in(
    http: httpx.AsyncClient, login: str, password: str, *, operator: bool = False
) -> httpx.Response:
    """The login form, as a browser submits it; returns the answer to the POST."""
    path = "/console/login" if operator else "/login"
    page = await http.get(path, headers={"accept": "text/html"})
    return await http.post(
        path,
        data={"login": login, "password": password, "csrf": csrf_of(page.text)},
        headers={"accept": "text/html"},
    )


async def page_csrf(http: httpx.AsyncClient, path: str) -> str:
    page = await http.get(path, headers={"accept": "text/html"})
    assert page.status_code == 200, page.text
    return csrf_of(page.text)
