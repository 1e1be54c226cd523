"""`relay apikey|suppression|webhook|events` as an operator runs them: child processes on the
test's Redis, a webhook endpoint of the test answering `relay webhook test`."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from relay.accounts.api_keys import ApiKeys
from relay.clock import SystemClock
from relay.events import EventDraft, EventStream
from tests.conftest import add_sender
from tests.support.webhook_receiver import Receiver


async def relay(redis_url: str, *args: str, **env: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "relay",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={
            **os.environ,
            "PYTHONPATH": str(Path(__file__).parents[1]),
            "RELAY_REDIS__URL": redis_url,
            "RELAY_CONFIG": "",
            **env,
        },
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    assert "Traceback" not in err.decode()
    return process.returncode, out.decode(), err.decode()


async def test_apikey_printed_once_works_until_revoked(redis, redis_server):
    await add_sender(redis)
    code, out, _ = await relay(redis_server.url, "apikey", "add", "alice", "--note", "shop")
    assert code == 0
    key = out.splitlines()[1]
    found = await ApiKeys(redis, SystemClock()).authenticate(key)
    assert found is not None and found.login == "alice" and found.scope == "send"
    stored = json.dumps(
        {k.decode(): v.decode() for k, v in (await redis.hgetall(f"apikey:{found.id}")).items()}
    )
    assert key.split("_", 2)[2] not in stored  # only a hash of the secret is kept
    code, out, _ = await relay(redis_server.url, "apikey", "list", "alice")
    assert found.id in out and "active" in out and key not in out
    code, _, _ = await relay(redis_server.url, "apikey", "revoke", "alice", found.id)
    assert code == 0
    assert await ApiKeys(redis, SystemClock()).authenticate(key) is None
    code, _, err = await relay(redis_server.url, "apikey", "add", "nobody")
    assert code == 1 and err.startswith("relay: ")


async def test_suppression_commands(redis, redis_server):
    await add_sender(redis)
    url = redis_server.url
    code, out, _ = await relay(
        url, "suppression", "add", "alice", "Bob@Dest.test", "--reason", "asked"
    )
    assert code == 0 and "bob@dest.test suppressed" in out
    code, out, _ = await relay(url, "suppression", "list", "alice", "--json")
    [entry] = json.loads(out)
    assert entry["address"] == "bob@dest.test" and entry["reason"] == "asked"
    assert entry["source"].startswith("operator:")
    code, out, _ = await relay(url, "suppression", "remove", "alice", "bob@dest.test")
    assert code == 0
    code, _, err = await relay(url, "suppression", "remove", "alice", "bob@dest.test")
    assert code == 1 and "not on the suppression list" in err


async def test_webhook_commands_and_events(redis, redis_server):
    await add_sender(redis)
    url = redis_server.url
    receiver = Receiver()
    await receiver.up()
    try:
        code, _, err = await relay(url, "webhook", "add", "alice", receiver.url)
        assert code == 1 and "not a public address" in err
        allow = {"RELAY_WEBHOOKS__ALLOW_PRIVATE_TARGETS": "true"}
        code, out, _ = await relay(
            url, "webhook", "add", "alice", receiver.url, "--events", "bounced", **allow
        )
        assert code == 0
        hook_id = out.split()[1]
        secret = out.splitlines()[-1]
        assert secret.startswith("whsec_")
        code, out, _ = await relay(url, "webhook", "test", "alice", hook_id, **allow)
        assert code == 0 and "answered HTTP 200" in out
        [delivery] = receiver.received
        assert delivery.event["kind"] == "test"
        code, out, _ = await relay(url, "webhook", "list", "alice")
        assert hook_id in out and "bounced" in out and secret not in out
        await receiver.down()
        code, _, err = await relay(url, "webhook", "test", "alice", hook_id, **allow)
        assert code == 1 and "ConnectError" in err
    finally:
        await receiver.down()

    stream = EventStream(redis, SystemClock(), retention=86400)
    await stream.append("alice", EventDraft("accepted", "q1", "bob@dest.test", 1.0))
    await stream.append(
        "alice", EventDraft("bounced", "q1", "bob@dest.test", 2.0, {"reply": "550"})
    )
    code, out, _ = await relay(url, "events", "alice", "--json")
    assert [e["kind"] for e in json.loads(out)] == ["accepted", "bounced"]
    code, out, _ = await relay(url, "events", "alice", "--message", "q1")
    assert "bounced" in out and 'reply="550"' in out
    code, _, _ = await relay(url, "webhook", "remove", "alice", hook_id)
    assert code == 0


async def test_removing_an_account_ends_its_keys_and_webhooks(redis, redis_server):
    await add_sender(redis)
    _, key = await ApiKeys(redis, SystemClock()).add("alice")
    allow = {"RELAY_WEBHOOKS__ALLOW_PRIVATE_TARGETS": "true"}
    code, _, _ = await relay(
        redis_server.url, "webhook", "add", "alice", "http://127.0.0.1:9/", **allow
    )
    assert code == 0
    code, _, _ = await relay(redis_server.url, "account", "remove", "alice")
    assert code == 0
    await add_sender(redis)  # the same login again, for someone else
    assert await ApiKeys(redis, SystemClock()).authenticate(key) is None
    code, out, _ = await relay(redis_server.url, "webhook", "list", "alice")
    assert "no webhooks" in out


async def test_events_refuses_a_cursor_that_is_not_an_event_id(redis, redis_server):
    await add_sender(redis)
    code, _, err = await relay(redis_server.url, "events", "alice", "--since", "yesterday")
    assert code == 1 and err.startswith("relay: not an event id: 'yesterday'")
