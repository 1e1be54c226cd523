"""Webhooks for real: the dispatcher posts to a small HTTP server of the test; signatures are
checked by an implementation written here from the README, not the relay's."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time

import pytest

from relay.clock import SystemClock
from relay.errors import InvalidInput
from relay.events import BadTarget, EventDraft, EventStream, WebhookStore, webhook_dispatcher
from relay.events.dispatcher import next_retry
from relay.events.signing import signature_header, verify
from relay.events.targets import check_target
from relay.events.webhooks import parse_kinds, register
from relay.sink import Sink
from tests.conftest import add_sender, wait_until
from tests.support.apps_http import app_stack, stack_settings
from tests.support.engine import sink_on
from tests.support.webhook_receiver import Delivery, Receiver


def bounce_bad(peer: str, rcpt: str) -> str | None:
    return "550 5.1.1 no such user here" if rcpt.startswith("bad@") else None


def independent_check(secret: str, delivery: Delivery, tolerance: float = 300) -> bool:
    """What the README tells a receiver to do, written without the relay's code."""
    fields = dict(part.split("=", 1) for part in delivery.headers["relay-signature"].split(","))
    stamp = int(fields["t"])
    mac = hmac.new(secret.encode(), f"{stamp}.".encode() + delivery.body, hashlib.sha256)
    fresh = abs(time.time() - stamp) <= tolerance
    return fresh and hmac.compare_digest(mac.hexdigest(), fields["v1"])


def mail(*to: str) -> dict[str, object]:
    return {"from": "alice@example.org", "to": list(to), "subject": "hi", "text": "Hello."}


@pytest.fixture
async def sink_address():
    async with sink_on(Sink(reply_for_rcpt=bounce_bad)) as address:
        yield address


async def add_hook(redis, settings, url: str, kinds: str):
    clock = SystemClock()
    stream = EventStream(redis, clock, retention=settings.events.retention.seconds)
    return await register(
        WebhookStore(redis, clock), stream, "alice", url, parse_kinds(kinds), allow_private=True
    )


async def test_application_loop_through_webhooks(redis, sink_address, server_cert, ca):
    receiver = Receiver()
    await receiver.up()
    await add_sender(redis)
    settings = stack_settings(sink_address)
    hook = await add_hook(redis, settings, receiver.url, "delivered,bounced")
    try:
        async with app_stack(redis, settings, server_cert, ca, webhooks=True) as stack:
            _, key = await stack.keys.add("alice")
            async with stack.client(key) as http:
                sent = await http.post("/v1/messages", json=mail("good@dest.test", "bad@dest.test"))
                assert sent.status_code == 202
                got = await receiver.wait_for(2)
                by_rcpt = {d.event["recipient"]: d.event for d in got}
                assert by_rcpt["good@dest.test"]["kind"] == "delivered"
                assert by_rcpt["bad@dest.test"]["kind"] == "bounced"
                assert {d.event["message_id"] for d in got} == {sent.json()["id"]}
                assert all(independent_check(hook.secret, d) for d in got)
                assert all(d.headers["relay-event-id"] == d.event["id"] for d in got)
                tampered = Delivery(got[0].headers, got[0].body.replace(b"good", b"evil"))
                assert not independent_check(hook.secret, tampered)
                assert not independent_check("whsec_other", got[0])

                again = await http.post("/v1/messages", json=mail("bad@dest.test"))
                assert again.status_code == 422
                assert "suppression list" in again.json()["detail"]["message"]
                await asyncio.sleep(0.3)
                assert len(receiver.received) == 2  # only the kinds asked for
    finally:
        await receiver.down()


async def test_endpoint_down_then_up_gets_every_event_in_order_once(
    redis, sink_address, server_cert, ca
):
    receiver = Receiver()
    await add_sender(redis)
    settings = stack_settings(sink_address)
    hook = await add_hook(redis, settings, receiver.url, "all")
    store = WebhookStore(redis, SystemClock())
    try:
        async with app_stack(redis, settings, server_cert, ca, webhooks=True) as stack:
            _, key = await stack.keys.add("alice")
            async with stack.client(key) as http:
                ids = []
                for n in range(3):
                    answer = await http.post("/v1/messages", json=mail(f"r{n}@dest.test"))
                    ids.append(answer.json()["id"])

                async def failures() -> int:
                    return sum(1 for e in await store.log("alice", hook.id) if not e["ok"])

                async with asyncio.timeout(10):
                    while await failures() < 3:  # noqa: ASYNC110 - the dispatcher is retrying
                        await asyncio.sleep(0.05)
                assert receiver.received == []
                await receiver.up()
                await receiver.wait_for(6)
                await asyncio.sleep(1.0)  # room for duplicates to show up, if any were sent
    finally:
        await receiver.down()
    events = [d.event for d in receiver.received]
    event_ids = [e["id"] for e in events]
    assert len(event_ids) == len(set(event_ids)) == 6  # once each: no duplicate
    assert event_ids == sorted(event_ids, key=lambda i: tuple(map(int, i.split("-"))))
    for message_id in ids:
        kinds = [e["kind"] for e in events if e["message_id"] == message_id]
        assert kinds == ["accepted", "delivered"]
    assert all(independent_check(hook.secret, d) for d in receiver.received)


def test_backoff_doubles_up_to_the_cap():
    assert [next_retry(n, first=10, cap=60) for n in (1, 2, 3, 4, 5)] == [10, 20, 40, 60, 60]


def test_signature_round_trip_and_replay_window():
    body = b'{"id":"1-0"}'
    header = signature_header("whsec_x", 1_800_000_000, body)
    assert verify("whsec_x", header, body, now=1_800_000_100)
    assert not verify("whsec_x", header, body, now=1_800_000_301)  # replayed too late
    assert not verify("whsec_y", header, body, now=1_800_000_000)
    assert not verify("whsec_x", header, body + b" ", now=1_800_000_000)


async def test_targets_are_checked_like_mx_addresses():
    for url in (
        "http://127.0.0.1:8080/x",
        "https://10.1.2.3/",
        "http://[::1]/",
        "http://localhost/",
    ):
        with pytest.raises(BadTarget):
            await check_target(url, allow_private=False)
    await check_target("http://127.0.0.1:8080/x", allow_private=True)
    for url in ("ftp://example.com/", "http://user:pw@example.com/", "not a url"):
        with pytest.raises(BadTarget):
            await check_target(url, allow_private=True)
    await check_target("https://93.184.215.14/hook", allow_private=False)


def test_kinds_are_named():
    assert parse_kinds("delivered, bounced") == ("delivered", "bounced")
    with pytest.raises(InvalidInput):
        parse_kinds("delivered,opened")


async def test_two_dispatchers_post_each_event_once(redis):
    receiver = Receiver()
    await receiver.up()
    settings = stack_settings("127.0.0.1:9")
    clock = SystemClock()
    hook = await add_hook(redis, settings, receiver.url, "all")
    stream = EventStream(redis, clock, retention=86400)
    for n in range(20):
        await stream.append("alice", EventDraft("accepted", f"q{n}", "a@x.test", clock.now()))
    stop = asyncio.Event()
    dispatchers = [
        asyncio.create_task(webhook_dispatcher(redis, settings, clock).run(stop)) for _ in range(2)
    ]
    try:
        await receiver.wait_for(20)
        await asyncio.sleep(0.5)  # room for a duplicate
    finally:
        stop.set()
        await asyncio.gather(*dispatchers)
        await receiver.down()
    assert [d.event["message_id"] for d in receiver.received] == [f"q{n}" for n in range(20)]
    assert all(independent_check(hook.secret, d) for d in receiver.received)


async def test_a_stalled_endpoint_does_not_slow_delivery(redis, sink_address, server_cert, ca):
    """The endpoint accepts connections and never answers: deliveries go on at once."""
    stalled: list[asyncio.StreamWriter] = []

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stalled.append(writer)
        await reader.read()  # until the dispatcher gives up on it

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    await add_sender(redis)
    settings = stack_settings(
        sink_address,
        webhooks={"allow_private_targets": True, "timeout": "30s", "poll_interval": "50ms"},
    )
    await add_hook(redis, settings, url, "all")
    try:
        async with app_stack(redis, settings, server_cert, ca, webhooks=True) as stack:
            _, key = await stack.keys.add("alice")
            async with stack.client(key) as http:
                ids = [
                    (await http.post("/v1/messages", json=mail(f"r{n}@dest.test"))).json()["id"]
                    for n in range(5)
                ]

                async def all_delivered() -> bool:
                    for queue_id in ids:
                        status = (await http.get(f"/v1/messages/{queue_id}")).json()
                        if (
                            status["recipients"][f"r{ids.index(queue_id)}@dest.test"]["status"]
                            != "delivered"
                        ):
                            return False
                    return True

                await wait_until(all_delivered, within=5)  # the POST's deadline is 30 s
                assert stalled, "the dispatcher was posting (and stuck) meanwhile"
    finally:
        server.close()
        for writer in stalled:
            writer.close()
