"""Quarantine and allow/deny lists over the API and the pages, on a real Redis and spool: a
customer delivers or deletes their own suspected spam (on their quota), never mail with
malware (kept as evidence) and never another account's; they keep their own lists, which
the submission path then applies; admins act on everything, viewers on nothing; every
action is in the audit log with who did it."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from relay.content.quarantine import Held
from relay.content.stats import ContentStats
from relay.web.auth import OperatorStore, Role
from relay.web.services import WebServices
from tests.conftest import PASSWORD, add_sender
from tests.support.quarantine import hold as quarantined
from tests.support.web import (
    OPERATOR_PASSWORD,
    client,
    csrf_of,
    log_in,
    make_app,
    web_settings,
)


async def hold(services: WebServices, account: str, kind: Held, to: str = "bob@example.com") -> str:
    return await quarantined(services.quarantine.store, kind, account, (to,))


@pytest.fixture
async def web(redis, tmp_path: Path):
    app, services = make_app(redis, web_settings(tmp_path))
    await add_sender(redis, "alice", daily=10)
    await add_sender(redis, "bob")
    operators = OperatorStore(redis)
    await operators.add("vera", OPERATOR_PASSWORD, Role.VIEWER, 0.0)
    await operators.add("adam", OPERATOR_PASSWORD, Role.ADMIN, 0.0)
    tokens = {
        "viewer": await operators.new_token("vera"),
        "admin": await operators.new_token("adam"),
    }
    return app, services, tokens


async def customer(http: httpx.AsyncClient, login: str = "alice") -> dict[str, str]:
    session = await http.post("/api/v1/session", json={"login": login, "password": PASSWORD})
    assert session.status_code == 200, session.text
    return {"x-csrf-token": session.json()["csrf"]}


async def test_a_customer_delivers_or_deletes_their_own_spam_never_malware(web) -> None:
    app, services, tokens = web
    spam = await hold(services, "alice", Held.SPAM)
    spam2 = await hold(services, "alice", Held.SPAM)
    malware = await hold(services, "alice", Held.MALWARE)
    bobs = await hold(services, "bob", Held.SPAM)
    async with client(app) as http:
        headers = await customer(http)
        mine = await http.get("/api/v1/accounts/alice/quarantine")
        assert {q["id"] for q in mine.json()} == {spam, spam2, malware}
        assert (await http.get(f"/api/v1/quarantine/{bobs}")).status_code == 404
        assert (await http.get("/api/v1/accounts/bob/quarantine")).status_code == 404
        assert (
            await http.post(f"/api/v1/quarantine/{bobs}/delete", headers=headers)
        ).status_code == 404

        released = await http.post(f"/api/v1/quarantine/{spam}/release", headers=headers)
        assert released.status_code == 200, released.text
        queue_id = released.json()["done"].rsplit(" ", 1)[1]
        meta = await services.queue.meta(queue_id)
        assert (meta.account, meta.recipients) == ("alice", ("bob@example.com",))
        usage = await services.quota.usage("alice", services.clock.now())
        assert usage.used == 1  # a release counts on the quota as new mail
        again = await http.post(f"/api/v1/quarantine/{spam}/release", headers=headers)
        assert again.status_code == 404  # delivered once

        for verb in ("release", "delete"):
            refused = await http.post(f"/api/v1/quarantine/{malware}/{verb}", headers=headers)
            assert refused.status_code == 403 and "malware" in refused.json()["error"]
        assert await services.quarantine.store.get(malware)

        deleted = await http.post(f"/api/v1/quarantine/{spam2}/delete", headers=headers)
        assert deleted.status_code == 200
        assert not services.quarantine.store.spool.exists(spam2)

        viewer = {"authorization": f"Bearer {tokens['viewer']}"}
        assert (await http.get("/api/v1/quarantine", headers=viewer)).status_code == 200
        looked = await http.post(f"/api/v1/quarantine/{malware}/delete", headers=viewer)
        assert looked.status_code == 403
        admin = {"authorization": f"Bearer {tokens['admin']}"}
        listing = await http.get("/api/v1/quarantine?kind=malware", headers=admin)
        assert [q["id"] for q in listing.json()] == [malware]
        assert (
            await http.post(f"/api/v1/quarantine/{malware}/delete", headers=admin)
        ).status_code == 200

    actions = {
        (e.actor, e.action, e.subject) for e in await services.audit.entries(account="alice")
    }
    assert ("user:alice", "quarantine-release", spam) in actions
    assert ("user:alice", "quarantine-delete", spam2) in actions
    assert ("operator:adam@web", "quarantine-delete", malware) in actions


async def test_a_release_over_the_quota_is_refused_and_stays_held(web) -> None:
    app, services, _ = web
    held = [await hold(services, "alice", Held.SPAM, f"r{i}@example.com") for i in range(11)]
    async with client(app) as http:
        headers = await customer(http)
        answers = [
            (await http.post(f"/api/v1/quarantine/{qid}/release", headers=headers)).status_code
            for qid in held
        ]
    assert answers.count(200) == 10 and answers[-1] == 409, answers  # daily = 10
    assert await services.quarantine.store.get(held[-1])


async def test_customers_keep_their_own_lists_and_the_submission_path_applies_them(web) -> None:
    app, services, tokens = web
    async with client(app) as http:
        headers = await customer(http)
        added = await http.post(
            "/api/v1/accounts/alice/lists",
            json={
                "kind": "recipient",
                "action": "deny",
                "value": "Ex@Partner.test",
                "reason": "left",
            },
            headers=headers,
        )
        assert added.status_code == 201, added.text
        assert added.json()["value"] == "ex@partner.test"
        refusal = await services.lists.recipient_refusal("alice", "ex@partner.test")
        assert refusal is not None and "left" in refusal
        assert await services.lists.recipient_refusal("bob", "ex@partner.test") is None
        bad = await http.post(
            "/api/v1/accounts/alice/lists",
            json={"kind": "domain", "action": "deny", "value": "not a domain"},
            headers=headers,
        )
        assert bad.status_code == 400 and "not a domain" in bad.json()["error"]
        other = await http.post(
            "/api/v1/accounts/bob/lists",
            json={"kind": "recipient", "action": "allow", "value": "a@b.test"},
            headers=headers,
        )
        assert other.status_code == 404
        assert (await http.get("/api/v1/lists")).status_code == 404  # the operators' view
        assert [e["value"] for e in (await http.get("/api/v1/accounts/alice/lists")).json()] == [
            "ex@partner.test"
        ]
        removed = await http.post(
            "/api/v1/accounts/alice/lists/remove",
            json={"kind": "recipient", "value": "ex@partner.test"},
            headers=headers,
        )
        assert removed.status_code == 200
        assert await services.lists.recipient_refusal("alice", "ex@partner.test") is None
        gone = await http.post(
            "/api/v1/accounts/alice/lists/remove",
            json={"kind": "recipient", "value": "ex@partner.test"},
            headers=headers,
        )
        assert gone.status_code == 404

        admin = {"authorization": f"Bearer {tokens['admin']}"}
        viewer = {"authorization": f"Bearer {tokens['viewer']}"}
        entry = {"kind": "domain", "action": "deny", "value": "spamtrap.test", "reason": "trap"}
        assert (await http.post("/api/v1/lists", json=entry, headers=viewer)).status_code == 403
        assert (await http.post("/api/v1/lists", json=entry, headers=admin)).status_code == 201
        assert await services.lists.recipient_refusal("bob", "x@spamtrap.test") is not None
        everything = await http.get("/api/v1/lists", headers=viewer)
        assert [(e["account"], e["value"]) for e in everything.json()] == [("", "spamtrap.test")]

    trail = [(e.actor, e.action) for e in await services.audit.entries(limit=20)]
    assert ("user:alice", "list-add") in trail and ("user:alice", "list-remove") in trail
    assert ("operator:adam@web", "list-add") in trail


async def test_the_home_page_shows_the_quarantine_and_lists_and_acts_on_them(web) -> None:
    app, services, _ = web
    spam = await hold(services, "alice", Held.SPAM)
    malware = await hold(services, "alice", Held.MALWARE)
    async with client(app) as http:
        await log_in(http, "alice", PASSWORD)
        page = await http.get("/home", headers={"accept": "text/html"})
        assert page.status_code == 200
        assert spam in page.text and malware in page.text
        assert f'action="/home/quarantine/{spam}/release"' in page.text
        assert f'action="/home/quarantine/{malware}/release"' not in page.text
        csrf = csrf_of(page.text)
        done = await http.post(
            f"/home/quarantine/{spam}/release",
            data={"csrf": csrf},
            headers={"accept": "text/html"},
        )
        assert done.status_code == 303 and "released" in done.headers["location"]
        refused = await http.post(
            f"/home/quarantine/{malware}/delete",
            data={"csrf": csrf},
            headers={"accept": "text/html"},
        )
        assert refused.status_code == 403 and "malware" in refused.text
        forged = await http.post(
            f"/home/quarantine/{malware}/delete",
            data={"csrf": "wrong"},
            headers={"accept": "text/html"},
        )
        assert forged.status_code == 403
        added = await http.post(
            "/home/lists",
            data={
                "csrf": csrf,
                "kind": "sender",
                "action": "deny",
                "value": "old@alice.test",
                "reason": "",
            },
            headers={"accept": "text/html"},
        )
        assert added.status_code == 303
        page = await http.get("/home", headers={"accept": "text/html"})
        assert "old@alice.test" in page.text
        assert await services.lists.sender_refusal("alice", "old@alice.test") is not None
        removed = await http.post(
            "/home/lists/remove",
            data={"csrf": csrf, "kind": "sender", "value": "old@alice.test"},
            headers={"accept": "text/html"},
        )
        assert removed.status_code == 303
        assert await services.lists.sender_refusal("alice", "old@alice.test") is None


async def test_the_console_lists_the_quarantine_and_an_admin_acts_on_it(web) -> None:
    app, services, _ = web
    malware = await hold(services, "bob", Held.MALWARE)
    async with client(app) as http:
        await log_in(http, "adam", OPERATOR_PASSWORD, operator=True)
        page = await http.get("/console/quarantine", headers={"accept": "text/html"})
        assert page.status_code == 200 and malware in page.text and "Test.EICAR.NDB" in page.text
        released = await http.post(
            f"/console/quarantine/{malware}/release",
            data={"csrf": csrf_of(page.text)},
            headers={"accept": "text/html"},
        )
        assert released.status_code == 303, released.text
        lists = await http.get("/console/lists", headers={"accept": "text/html"})
        assert lists.status_code == 200
        added = await http.post(
            "/console/lists",
            data={
                "csrf": csrf_of(lists.text),
                "account": "",
                "kind": "domain",
                "action": "deny",
                "value": "trap.test",
                "reason": "spam trap",
            },
            headers={"accept": "text/html"},
        )
        assert added.status_code == 303
        assert (
            "trap.test" in (await http.get("/console/lists", headers={"accept": "text/html"})).text
        )
    assert await services.lists.recipient_refusal("alice", "a@trap.test") is not None


async def test_the_content_report_counts_viruses_spam_and_the_quarantine(web, redis) -> None:
    app, services, tokens = web
    stats = ContentStats(redis)
    now = services.clock.now()
    await stats.malware("alice", "Test.EICAR.NDB", now, 86400)
    await stats.malware("bob", "Test.EICAR.NDB", now, 86400)
    await stats.spam("alice", "quarantine")
    await hold(services, "alice", Held.MALWARE)
    async with client(app) as http:
        admin = {"authorization": f"Bearer {tokens['admin']}"}
        report = (await http.get("/api/v1/reports/content", headers=admin)).json()
        assert report["viruses"]["Test.EICAR.NDB"] == {
            "total": 2,
            "accounts": {"alice": 1, "bob": 1},
        }
        assert report["spam"] == {"alice": {"quarantine": 1}}
        assert report["quarantine"]["by_kind"]["malware"]["messages"] == 1
        assert report["quarantine"]["by_account"]["alice"]["messages"] == 1
        await customer(http)
        assert (await http.get("/api/v1/reports/content")).status_code == 404
    async with client(app) as http:
        await log_in(http, "vera", OPERATOR_PASSWORD, operator=True)
        page = await http.get("/console/reports", headers={"accept": "text/html"})
        assert page.status_code == 200 and "Test.EICAR.NDB" in page.text
