"""The HTTP send API, events and the suppression list, against real servers: uvicorn serving
the routers on 127.0.0.1, the SMTP listeners, a delivery worker and a scriptable sink."""

from __future__ import annotations

import asyncio
import base64

import aiosmtplib
import httpx
import pytest

from relay.abuse.factory import suspension_service
from relay.accounts.api_keys import ApiKeys
from relay.app import quota_store
from relay.clock import SystemClock
from relay.sink import Sink
from reputation import Kind
from tests.conftest import PASSWORD, add_sender, free_port, wait_until
from tests.support.apps_http import app_stack, stack_settings
from tests.support.engine import sink_on
from tests.support.relay_process import start_relay, stop_relay, submit, write_config
from tests.support.web import client, make_app, web_settings

SENDER = "alice@example.org"


def bounce_bad(peer: str, rcpt: str) -> str | None:
    return "550 5.1.1 no such user here" if rcpt.startswith("bad@") else None


def mail(*to: str, **extra: object) -> dict[str, object]:
    return {"from": f"Alice <{SENDER}>", "to": list(to), "subject": "hi", "text": "Hello."} | extra


@pytest.fixture
async def sink_address():
    sink = Sink(reply_for_rcpt=bounce_bad)
    async with sink_on(sink) as address:
        yield sink, address


async def smtp_send(stack, *to: str) -> aiosmtplib.SMTPResponse:
    async with aiosmtplib.SMTP(
        hostname="127.0.0.1", port=stack.smtp_port, start_tls=True, tls_context=stack.client_tls
    ) as smtp:
        await smtp.login("alice", PASSWORD)
        await smtp.mail(SENDER)
        for rcpt in to:
            await smtp.rcpt(rcpt)
        return await smtp.data(f"From: {SENDER}\r\nSubject: x\r\n\r\nhi\r\n")


async def test_send_events_suppression_loop(redis, sink_address, server_cert, ca):
    _, address = sink_address
    await add_sender(redis, daily=100)
    settings = stack_settings(address)
    async with app_stack(redis, settings, server_cert, ca) as stack:
        _, key = await stack.keys.add("alice")
        async with stack.client(key) as http:
            sent = await http.post("/v1/messages", json=mail("good@dest.test", "bad@dest.test"))
            assert sent.status_code == 202, sent.text
            queue_id = sent.json()["id"]

            async def settled() -> bool:
                found = await http.get(f"/v1/messages/{queue_id}")
                states = found.json().get("recipients", {})
                return {s["status"] for s in states.values()} == {"delivered", "bounced"}

            await wait_until(settled)
            status = (await http.get(f"/v1/messages/{queue_id}")).json()
            good, bad = (
                status["recipients"]["good@dest.test"],
                status["recipients"]["bad@dest.test"],
            )
            assert good["status"] == "delivered" and good["data"]["egress_ip"].startswith("127.")
            assert good["data"]["reply"].startswith("250")
            assert bad["status"] == "bounced" and bad["data"]["reply"].startswith("550 5.1.1")
            assert bad["also"] == ["suppressed"]
            kinds = [(e["kind"], e["recipient"]) for e in status["events"]]
            assert kinds[:2] == [("accepted", "good@dest.test"), ("accepted", "bad@dest.test")]

            listed = (await http.get("/v1/suppressions")).json()["suppressions"]
            assert [s["address"] for s in listed] == ["bad@dest.test"]
            assert listed[0]["source"] == "bounce" and listed[0]["message_id"] == queue_id

            used = (await quota_store(redis, settings).usage("alice", SystemClock().now())).used
            again = await http.post("/v1/messages", json=mail("bad@dest.test"))
            assert again.status_code == 422
            detail = again.json()["detail"]
            assert detail["field"] == "to" and detail["code"] == "all_suppressed"
            assert "bad@dest.test is on your suppression list since" in detail["message"]
            assert detail["message"].startswith("550 5.1.1")

            with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
                await smtp_send(stack, "bad@dest.test")
            code, text = refused.value.code, refused.value.message
            assert code == 550 and text.startswith("5.1.1 bad@dest.test is on your suppression")
            assert "(bounced: 550 5.1.1 no such user here)" in text
            after = (await quota_store(redis, settings).usage("alice", SystemClock().now())).used
            assert after == used  # refused without counting on the quota

            page = (await http.get("/v1/events", params={"limit": 3})).json()
            rest = (await http.get("/v1/events", params={"since": page["next"]})).json()
            everything = page["events"] + rest["events"]
            assert len({e["id"] for e in everything}) == len(everything)
            assert [e["kind"] for e in everything].count("suppressed") == 1
            removed = await http.delete("/v1/suppressions/bad@dest.test")
            assert removed.status_code == 200
            assert (await http.post("/v1/messages", json=mail("bad@dest.test"))).status_code == 202


async def test_idempotent_retry_queues_once(redis, sink_address, server_cert, ca):
    _, address = sink_address
    await add_sender(redis)
    async with app_stack(redis, stack_settings(address), server_cert, ca, deliver=False) as stack:
        _, key = await stack.keys.add("alice")
        async with stack.client(key) as http:
            headers = {"Idempotency-Key": "order-42"}
            answers = await asyncio.gather(
                *(
                    http.post("/v1/messages", json=mail("x@dest.test"), headers=headers)
                    for _ in range(5)
                )
            )
            first = next(a for a in answers if a.status_code == 202)
            assert {a.status_code for a in answers} <= {202, 409}
            later = await http.post("/v1/messages", json=mail("x@dest.test"), headers=headers)
            assert later.status_code == 202 and later.json() == first.json()
            other = await http.post("/v1/messages", json=mail("y@dest.test"), headers=headers)
            assert other.status_code == 422
            assert await stack.queue.count() == 1


async def test_one_quota_for_smtp_and_api(redis, sink_address, server_cert, ca):
    _, address = sink_address
    quota = 7
    await add_sender(redis, daily=quota)
    async with app_stack(redis, stack_settings(address), server_cert, ca, deliver=False) as stack:
        _, key = await stack.keys.add("alice")
        async with stack.client(key) as http:

            async def by_api(n: int) -> bool:
                answer = await http.post("/v1/messages", json=mail(f"api{n}@dest.test"))
                assert answer.status_code in (202, 429), answer.text
                if answer.status_code == 429:
                    assert int(answer.headers["Retry-After"]) > 0
                    assert answer.json()["detail"]["message"].startswith(
                        f"452 4.7.1 Daily quota {quota} reached"
                    )
                return answer.status_code == 202

            async def by_smtp(n: int) -> bool:
                try:
                    await smtp_send(stack, f"smtp{n}@dest.test")
                except aiosmtplib.SMTPRecipientRefused as exc:
                    assert exc.code == 452
                    return False
                return True

            results = await asyncio.gather(*(f(n) for n in range(quota) for f in (by_api, by_smtp)))
    assert sum(results) == quota
    assert await stack.queue.count() == quota


async def test_refusals_name_the_cause(redis, sink_address, server_cert, ca):
    _, address = sink_address
    await add_sender(redis)
    settings = stack_settings(address)
    async with app_stack(redis, settings, server_cert, ca, deliver=False) as stack:
        record, key = await stack.keys.add("alice")
        async with stack.client(key) as http:
            bad = await http.post("/v1/messages", json=mail("x@dest.test", subject="a\r\nBcc: z@z"))
            assert bad.status_code == 422 and bad.json()["detail"]["field"] == "subject"
            bad = await http.post("/v1/messages", json=mail("not an address"))
            assert bad.status_code == 422 and bad.json()["detail"]["field"] == "to[0]"
            attached = mail(
                "x@dest.test",
                attachments=[{"name": "a.pdf", "content_type": "application/pdf", "content": "!"}],
            )
            bad = await http.post("/v1/messages", json=attached)
            assert bad.json()["detail"]["field"] == "attachments[0].content"
            raw = base64.b64encode(b"From: alice@example.org\r\nTo: r@dest.test\r\n\r\nhi\r\n")
            assert (await http.post("/v1/messages", json={"raw": raw.decode()})).status_code == 202

            suspensions = suspension_service(redis, settings, SystemClock(), stack.quota)
            await suspensions.suspend("alice", Kind.ADMIN, "test", {}, actor="operator:test")
            refused = await http.post("/v1/messages", json=mail("x@dest.test"))
            assert refused.status_code == 403
            assert refused.json()["detail"]["message"].startswith("451 4.7.1 Account suspended")

        await stack.keys.revoke("alice", record.id)
        async with stack.client(key) as http:
            assert (await http.post("/v1/messages", json=mail("x@dest.test"))).status_code == 401
        async with stack.client("rk_nothing") as http:
            assert (await http.get("/v1/events")).status_code == 401


async def test_relay_run_serves_the_send_api_on_the_quota_smtp_uses(
    redis, redis_server, server_cert, ca, sink, tmp_path
):
    """The wiring of `relay run`: the HTTP listener serves `/v1/messages` through the very
    SubmissionService SMTP uses (one quota of 2: an SMTP message and an API message, then
    the API is refused), and what it accepts is delivered."""
    the_sink, sink_port = sink
    await add_sender(redis, "alice", daily=2)
    _, key = await ApiKeys(redis, SystemClock()).add("alice")
    smtp_port, http_port = free_port(), free_port()
    config = tmp_path / "relay.toml"
    write_config(
        config,
        redis_url=redis_server.url,
        server_cert=server_cert,
        submit_port=smtp_port,
        sink_port=sink_port,
        http_port=http_port,
    )
    process = await start_relay(config, smtp_port)
    try:
        await submit(smtp_port, ca, 1)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{http_port}",
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        ) as http:
            sent = await http.post("/v1/messages", json=mail("app@example.com"))
            assert sent.status_code == 202, sent.text
            over = await http.post("/v1/messages", json=mail("more@example.com"))
            assert over.status_code == 429, over.text
        async with asyncio.timeout(30):
            while len(the_sink.messages) < 2:  # noqa: ASYNC110 (another process delivers)
                await asyncio.sleep(0.05)
    finally:
        await stop_relay(process)


async def test_the_app_relay_run_serves_answers_the_documented_error_shape(redis, tmp_path):
    """`create_app` (not just the routers): the applications' errors are
    `{"detail": {"code", "message", "field"?}}` with their headers, as documented."""
    app, _ = make_app(redis, web_settings(tmp_path))
    await add_sender(redis, "alice")
    _, key = await ApiKeys(redis, SystemClock()).add("alice")
    async with client(app) as http:
        unknown = await http.post("/v1/messages", json=mail("x@dest.test"))
        assert unknown.status_code == 401
        assert unknown.headers["www-authenticate"] == "Bearer"
        assert unknown.json()["detail"]["code"] == "unauthorized"
        http.headers["Authorization"] = f"Bearer {key}"
        bad = await http.post("/v1/messages", json=mail("x@dest.test", subject="a\r\nBcc: z@z"))
        assert bad.status_code == 422
        assert bad.json()["detail"] == {
            "code": "bad_field",
            "message": "must not contain line breaks or NUL",
            "field": "subject",
        }
        assert (await http.post("/v1/messages", content=b"{")).json()["detail"]["field"] == "body"
        missing = await http.get("/v1/messages/nothing")
        assert missing.status_code == 404 and missing.json()["detail"]["code"] == "not_found"
        sent = await http.post("/v1/messages", json=mail("x@dest.test"))
        assert sent.status_code == 202 and sent.json()["accepted"] == ["x@dest.test"]
