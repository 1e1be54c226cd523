"""Who may do what on the HTTP side: 401 without credentials, 404 for another customer's
account, 403 for a viewer acting or a form without its CSRF token; logins go through the
SMTP AUTH guard; every operator action is audited with the operator's name."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.abuse.audit import AuditLog
from relay.clock import SystemClock
from relay.web.auth import OperatorStore
from reputation import Kind
from tests.conftest import PASSWORD, add_sender
from tests.support.web import (
    OPERATOR_PASSWORD,
    add_operator,
    client,
    log_in,
    make_app,
    page_csrf,
    web_settings,
)

HTML = {"accept": "text/html"}


@pytest.fixture
async def web(redis, tmp_path: Path):
    settings = web_settings(tmp_path)
    app, services = make_app(redis, settings)
    await add_sender(redis, "alice")
    await add_sender(redis, "bob")
    await add_operator(redis, "vera", "viewer")
    await add_operator(redis, "adam", "admin")
    return app, services


async def test_health_and_readiness(web, tmp_path: Path) -> None:
    app, _ = web
    async with client(app) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        assert (await http.get("/readyz")).json() == {"status": "ready"}
        (tmp_path / "spool").rmdir()
        answer = await http.get("/readyz")
    assert answer.status_code == 503
    assert "spool" in answer.json()["problems"]


async def test_customer_logs_in_with_the_smtp_credential_and_sees_only_their_account(web) -> None:
    app, _ = web
    async with client(app) as http:
        assert (await http.get("/home", headers=HTML)).status_code == 401
        wrong = await log_in(http, "alice", "not the password")
        assert wrong.status_code == 401
        assert "wrong login or password" in wrong.text
        ok = await log_in(http, "alice", PASSWORD)
        assert ok.status_code == 303 and ok.headers["location"] == "/home"
        cookie = ok.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        home = await http.get("/home", headers=HTML)
        assert home.status_code == 200 and "of 1000 recipients" in home.text
        assert (await http.get("/api/v1/accounts/alice/usage")).json()["daily"] == 1000
        assert (await http.get("/api/v1/accounts/bob/usage")).status_code == 404
        assert (await http.get("/api/v1/accounts/nobody")).status_code == 404
        assert (await http.get("/api/v1/accounts")).status_code == 404
        assert (await http.get("/console", headers=HTML)).status_code == 404


async def test_viewer_reads_but_cannot_lift_admin_lifts_and_is_audited(web, redis) -> None:
    app, services = web
    s = await services.suspensions.suspend(
        "alice", Kind.ABUSE, "complaint", {"reporter": "fbl.example"}, actor="system:test"
    )
    async with client(app) as http:
        assert (await log_in(http, "vera", OPERATOR_PASSWORD, operator=True)).status_code == 303
        page = await http.get(f"/console/suspensions/{s.id}", headers=HTML)
        assert page.status_code == 200 and "fbl.example" in page.text
        assert "Viewers cannot lift" in page.text
        csrf = await page_csrf(http, "/console")
        refused = await http.post(
            f"/console/suspensions/{s.id}/lift", data={"reason": "ok", "csrf": csrf}, headers=HTML
        )
        assert refused.status_code == 403
    async with client(app) as http:
        await log_in(http, "adam", OPERATOR_PASSWORD, operator=True)
        no_token = await http.post(
            f"/console/suspensions/{s.id}/lift", data={"reason": "ok"}, headers=HTML
        )
        assert no_token.status_code == 403  # CSRF
        assert (await services.suspensions.store.get(s.id)).status.value == "open"
        csrf = await page_csrf(http, f"/console/suspensions/{s.id}")
        done = await http.post(
            f"/console/suspensions/{s.id}/lift",
            data={"reason": "customer cleaned up", "csrf": csrf},
            headers=HTML,
        )
        assert done.status_code == 303
    assert (await services.suspensions.store.get(s.id)).status.value == "lifted"
    entries = await AuditLog(redis, SystemClock()).entries(account="alice")
    lift = [e for e in entries if e.action == "lift"][-1]
    assert lift.actor == "operator:adam@web" and lift.reason == "customer cleaned up"


async def test_bearer_tokens_carry_the_role(web, redis) -> None:
    app, _ = web
    viewer = await OperatorStore(redis).new_token("vera")
    admin = await OperatorStore(redis).new_token("adam")
    async with client(app) as http:
        assert (await http.get("/api/v1/ips")).status_code == 401
        bad = await http.get("/api/v1/ips", headers={"authorization": "Bearer rlt_nope"})
        assert bad.status_code == 401
        v = {"authorization": f"Bearer {viewer}"}
        a = {"authorization": f"Bearer {admin}"}
        assert len((await http.get("/api/v1/ips", headers=v)).json()) == 2
        body = {"reason": "warming up"}
        assert (
            await http.post("/api/v1/ips/127.0.0.2/disable", json=body, headers=v)
        ).status_code == 403
        done = await http.post("/api/v1/ips/127.0.0.2/disable", json=body, headers=a)
        assert done.status_code == 200, done.text
        ips = {r["ip"]: r for r in (await http.get("/api/v1/ips", headers=v)).json()}
        assert ips["127.0.0.2"]["state"] == "disabled"
        outside = await http.post("/api/v1/ips/10.9.9.9/disable", json=body, headers=a)
        assert outside.status_code == 400 and "not in the egress pool" in outside.json()["error"]
    await OperatorStore(redis).remove("vera")
    async with client(app) as http:
        assert (await http.get("/api/v1/ips", headers=v)).status_code == 401


async def test_api_calls_on_the_session_cookie_need_the_csrf_header(web, redis) -> None:
    app, services = web
    s = await services.suspensions.suspend("bob", Kind.ADMIN, "hand", {}, actor="system:test")
    async with client(app) as http:
        session = await http.post(
            "/api/v1/session",
            json={"kind": "operator", "login": "adam", "password": OPERATOR_PASSWORD},
        )
        assert session.status_code == 200
        csrf = session.json()["csrf"]
        url = f"/api/v1/suspensions/{s.id}/lift"
        assert (await http.post(url, json={"reason": "x"})).status_code == 403
        ok = await http.post(url, json={"reason": "x"}, headers={"x-csrf-token": csrf})
        assert ok.status_code == 200 and ok.json()["status"] == "lifted"


async def test_logins_go_through_the_auth_guard(web) -> None:
    app, _ = web
    async with client(app) as http:
        for _ in range(5):  # lock_after = 5 in these settings
            assert (await log_in(http, "bob", "wrong password")).status_code == 401
        locked = await log_in(http, "bob", PASSWORD)
        assert locked.status_code == 429 and "Too many failed logins" in locked.text
        api = await http.post("/api/v1/session", json={"login": "bob", "password": PASSWORD})
        assert api.status_code == 429
        # operators have streaks of their own
        assert (await log_in(http, "adam", OPERATOR_PASSWORD, operator=True)).status_code == 303


async def test_customer_home_shows_recent_outcomes_and_takes_an_unblock_request(web) -> None:
    from relay.reports import Outcome

    app, services = web
    await services.activity.record(
        "alice", [Outcome("bounced", "127.0.0.2", "x@example.net", "550 5.1.1 no such user")], 1.0
    )
    s = await services.suspensions.suspend(
        "alice", Kind.ADMIN, "unpaid invoice", {}, actor="system:test"
    )
    async with client(app) as http:
        await log_in(http, "alice", PASSWORD)
        home = await http.get("/home", headers=HTML)
        assert "550 5.1.1 no such user" in home.text
        assert "suspended-banner" in home.text and "only support can lift it" in home.text
        csrf = await page_csrf(http, "/home")
        sent = await http.post(
            "/home/unblock", data={"message": "invoice paid", "csrf": csrf}, headers=HTML
        )
        assert sent.status_code == 303
    requests = await services.unblocks.listing(open_only=True)
    assert [(r.account, r.message, r.suspensions) for r in requests] == [
        ("alice", "invoice paid", (s.id,))
    ]
    entries = await services.audit.entries(account="alice")
    assert entries[-1].action == "unblock-request" and entries[-1].actor == "user:alice"


async def test_admin_adds_and_removes_a_plan_from_the_account_page(web, redis) -> None:
    app, services = web
    async with client(app) as http:
        await log_in(http, "adam", OPERATOR_PASSWORD, operator=True)
        csrf = await page_csrf(http, "/console/accounts/alice")
        added = await http.post(
            "/console/accounts/alice/plans", data={"daily": "500", "csrf": csrf}, headers=HTML
        )
        assert added.status_code == 303
        page = await http.get("/console/accounts/alice", headers=HTML)
        assert "<svg" in page.text and "500" in page.text
    usage = await services.quota.usage("alice", SystemClock().now())
    assert usage.daily == 1500  # plans add up
    plan_id = next(p.id for p in usage.plans if p.daily == 500)
    entries = await services.audit.entries(account="alice")
    assert (entries[-1].action, entries[-1].actor) == ("plan-add", "operator:adam@web")
    token = await OperatorStore(redis).new_token("adam")
    async with client(app) as http:
        gone = await http.delete(
            f"/api/v1/accounts/alice/plans/{plan_id}", headers={"authorization": f"Bearer {token}"}
        )
        assert gone.status_code == 200
    assert (await services.quota.usage("alice", SystemClock().now())).daily == 1000


async def test_bodies_are_bounded_and_pages_cannot_be_framed(web) -> None:
    app, _ = web
    async with client(app) as http:
        big = await http.post("/api/v1/session", content=b"x" * 2_000_000)
        assert big.status_code == 413
        page = await http.get("/login", headers=HTML)
        assert page.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


async def test_what_relay_suspension_add_and_queue_account_do_from_the_browser(web) -> None:
    app, services = web
    async with client(app) as http:
        await log_in(http, "adam", OPERATOR_PASSWORD, operator=True)
        csrf = await page_csrf(http, "/console/accounts/bob")
        done = await http.post(
            "/console/accounts/bob/suspend",
            data={"reason": "unpaid", "kind": "admin", "csrf": csrf},
            headers=HTML,
        )
        assert done.status_code == 303
        [s] = await services.suspensions.store.of_account("bob")
        assert (s.kind.value, s.actor, s.evidence) == (
            "admin",
            "operator:adam@web",
            {"by_hand": True},
        )
        held = await http.post(
            "/console/queue/account/bob/release", data={"csrf": csrf}, headers=HTML
        )  # the suspension held bob's (empty) queue: releasing is allowed
        assert held.status_code == 303
        unknown = await http.post(
            "/console/queue/account/nobody/hold", data={"csrf": csrf}, headers=HTML
        )
        assert unknown.status_code == 404
    assert (await services.audit.entries(account="bob"))[-1].action == "queue-release-account"
