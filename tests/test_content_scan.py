"""Scanning at DATA with a real clamd and a real rspamd, through the whole relay (`serve`):
malware refused and kept, spam refused or held, clean mail delivered untouched."""

from __future__ import annotations

import asyncio
import base64
import io
import ssl
import zipfile
from email.message import EmailMessage

import aiosmtplib
import pytest

from quota import QuotaStore
from relay.abuse.factory import suspension_service
from relay.clock import SystemClock
from relay.config import Settings
from relay.content.factory import quarantine_desk, quarantine_store
from relay.content.lists import GLOBAL, ListAction, ListKind, ListStore
from relay.content.quarantine import Held
from relay.content.stats import ContentStats
from relay.events import EventStream
from relay.queue import QueueStore
from tests.conftest import PASSWORD, add_sender
from tests.support.scanners import (
    CUSTOM_MARKER,
    CUSTOM_SIGNATURE,
    EICAR,
    QUARANTINE_MARKER,
    REJECT_MARKER,
)
from tests.test_end_to_end import relay_settings, run_relay

CLEAN = (
    b"From: alice@example.org\r\nTo: bob@example.com\r\nSubject: minutes of the meeting\r\n"
    b"Date: Tue, 01 Dec 2026 10:00:00 +0000\r\nMessage-ID: <clean-1@example.org>\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    b"Hello Bob,\r\n\r\nhere are the minutes of today's meeting.\r\n"
)


def message(
    subject: str = "report", text: str = "Please find the file attached.", **files: bytes
) -> bytes:
    msg = EmailMessage()
    msg["From"] = "alice@example.org"
    msg["To"] = "bob@example.com"
    msg["Subject"] = subject
    msg["Date"] = "Tue, 01 Dec 2026 10:00:00 +0000"
    msg["Message-ID"] = "<scan-test@example.org>"
    msg.set_content(text)
    for name, data in files.items():
        msg.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return msg.as_bytes().replace(b"\n", b"\r\n")


def zipped(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(name, data)
    return buffer.getvalue()


def content_settings(clamd_server, rspamd_server, **overrides) -> dict:
    values = {
        "clamd": {"address": clamd_server.unix_address, "deadline": "10s"},
        "rspamd": {"url": rspamd_server.url, "deadline": "20s"},
        "spam_quarantine": 5.0,
        "spam_reject": 15.0,
    }
    values.update(overrides)
    return values


@pytest.fixture
async def relay(redis, redis_server, server_cert, dns, sink, clamd_server, rspamd_server):
    received, port = sink
    await add_sender(redis)
    base = relay_settings(redis_server.url, server_cert, dns, routes={"*": f"127.0.0.1:{port}"})
    settings = Settings(
        **{
            **base.model_dump(mode="python", exclude={"content"}),
            "content": content_settings(
                clamd_server, rspamd_server, malware_suspend_after=2, lists_refresh="0s"
            ),
        }
    )
    task, stop = await run_relay(settings)
    yield settings, received
    stop.set()
    await task


async def send(
    settings: Settings, ca, body: bytes, rcpts=("bob@example.com",), sender="alice@example.org"
) -> tuple[int, str]:
    address = settings.submission.listeners[0].address
    context = ssl.create_default_context()
    ca.configure_trust(context)
    async with aiosmtplib.SMTP(
        hostname="127.0.0.1", port=address.port, start_tls=True, tls_context=context, timeout=60
    ) as smtp:
        await smtp.login("alice", PASSWORD)
        try:
            await smtp.mail(sender)
            for rcpt in rcpts:
                await smtp.rcpt(rcpt)
            response = await smtp.data(body)
        except aiosmtplib.SMTPResponseException as exc:
            return exc.code, exc.message
        return response.code, response.message


async def settled(redis, clock, settings) -> QueueStore:
    """The queue once nothing is left in it (deliveries done)."""
    queue = QueueStore.from_settings(redis, clock, settings)
    for _ in range(200):
        if await queue.count() == 0:
            return queue
        await asyncio.sleep(0.05)
    raise AssertionError("the queue did not empty")


@pytest.mark.parametrize(
    "body,signature",
    [
        (message(**{"invoice.com": EICAR}), "Test.EICAR"),
        (message(**{"invoice.zip": zipped("invoice.com", EICAR)}), "Test.EICAR"),
        (
            message(
                **{
                    "b64.txt": base64.b64encode(zipped("x.com", EICAR)),
                    "a.zip": zipped("x.com", EICAR),
                }
            ),
            "Test.EICAR",
        ),
        (message(text="payload " + CUSTOM_MARKER.decode()), CUSTOM_SIGNATURE),
    ],
    ids=["attachment", "zip-attachment", "zip-in-base64", "custom-signature"],
)
async def test_malware_is_554_quarantined_and_never_delivered(
    relay, redis, clock, ca, body, signature
):
    settings, received = relay
    code, text = await send(settings, ca, body)
    assert code == 554 and text.startswith("5.7.1 Refused: malware found (" + signature), text
    queue = await settled(redis, clock, settings)
    await asyncio.sleep(0.3)
    assert received.count == 0, "nothing carrying malware reaches the sink"
    store = quarantine_store(redis, settings, clock, queue)
    (held,) = await store.listing(account="alice")
    assert held.kind is Held.MALWARE and held.reason.startswith(signature)
    assert held.id in text, "the reply names the quarantine reference"
    assert queue.spool.path(held.id).read_bytes() == body, "kept byte for byte"
    assert held.expires_at - held.created_at == pytest.approx(365 * 86400, abs=5)
    counts = await ContentStats(redis).counts()
    assert sum(v["total"] for v in counts["viruses"].values()) == 1


async def test_clean_mail_passes_untouched(relay, redis, clock, ca):
    settings, received = relay
    code, _ = await send(settings, ca, CLEAN)
    assert code == 250
    (delivered,) = await received.wait_for(1, timeout=10)
    assert delivered.data.endswith(CLEAN), "the body arrives byte for byte"
    head = delivered.data[: delivered.data.index(CLEAN)]
    for leak in (b"X-Spam", b"rspamd", b"Rspamd", b"clam", b"X-Virus"):
        assert leak not in head, f"{leak!r} added to delivered mail"
    queue = await settled(redis, clock, settings)
    assert await quarantine_store(redis, settings, clock, queue).listing() == []


async def test_spam_over_reject_is_550(relay, redis, clock, ca):
    settings, received = relay
    code, text = await send(settings, ca, message(text=f"cheap pills {REJECT_MARKER}"))
    assert code == 550 and text.startswith("5.7.1 Refused: the message looks like spam"), text
    await settled(redis, clock, settings)
    assert received.count == 0
    counts = await ContentStats(redis).counts()
    assert counts["spam"] == {"alice": {"reject": 1}}


async def test_spam_over_quarantine_is_held_then_released_exactly_once(relay, redis, clock, ca):
    settings, received = relay
    body = message(subject=f"offer {QUARANTINE_MARKER}")
    code, text = await send(settings, ca, body, rcpts=("bob@example.com", "carol@example.net"))
    assert code == 250 and "held in quarantine" in text, text
    await settled(redis, clock, settings)
    await asyncio.sleep(0.3)
    assert received.count == 0, "held, not delivered"
    quota = QuotaStore(redis, default_per_minute=1000, per_recipient=100)
    now = SystemClock()  # the relay's clock in `serve`: the quota counts in real time
    used_before = (await quota.usage("alice", now.now())).used
    desk = quarantine_desk(
        redis, settings, now, quota, suspension_service(redis, settings, now, quota)
    )
    (held,) = await desk.store.listing(account="alice")
    assert held.kind is Held.SPAM and held.id in text
    assert held.subject == f"offer {QUARANTINE_MARKER}"
    events = await EventStream(redis, now, retention=86400.0).of_message("alice", held.id)
    assert sorted((e.kind, e.recipient) for e in events) == [
        ("quarantined", "bob@example.com"),
        ("quarantined", "carol@example.net"),
    ], "the application learns it was held"

    first, second = await asyncio.gather(
        desk.release(held.id, actor="operator:test", operator=True),
        desk.release(held.id, actor="operator:test", operator=True),
        return_exceptions=True,
    )
    outcomes = sorted(type(x).__name__ for x in (first, second))
    assert outcomes in (["ReleaseRefused", "str"], ["NotInQuarantine", "str"]), outcomes
    messages = await received.wait_for(2, timeout=10)
    await settled(redis, clock, settings)
    await asyncio.sleep(0.3)
    assert received.count == 2, "one copy per recipient domain, once"
    assert all(m.data.endswith(body) for m in messages)
    assert (await quota.usage("alice", now.now())).used == used_before + 2
    assert await desk.store.listing() == []
    entries = await desk._audit.entries(account="alice")
    assert [e.action for e in entries if e.action.startswith("quarantine")] == [
        "quarantine-release"
    ]


async def test_malware_suspends_the_account_past_the_count(relay, redis, ca):
    settings, _ = relay
    for _ in range(2):
        code, _ = await send(settings, ca, message(**{"a.com": EICAR}))
        assert code == 554
    quota = QuotaStore(redis, default_per_minute=1000, per_recipient=100)
    suspensions = suspension_service(redis, settings, SystemClock(), quota)
    (suspension,) = await suspensions.store.listing(open_only=True)
    assert suspension.account == "alice" and suspension.kind.value == "abuse"
    assert suspension.evidence["signature"].startswith("Test.EICAR")
    assert suspension.evidence["hits_in_window"] == 2
    code, text = await send(settings, ca, CLEAN)
    assert code == 451 and "Account suspended (abuse)" in text, text


async def test_20mb_attachment_is_scanned_to_its_end_within_the_deadline(relay, redis, clock, ca):
    """clamd's deadline in this relay is 10 s and rspamd's 20 s: a 20 MB attachment with the
    malware after it is found (the whole stream was scanned), and the same size clean goes
    through."""
    settings, received = relay
    bulk = bytes(range(256)) * (20 * 1024 * 1024 // 256)
    code, text = await send(
        settings, ca, message(**{"data.bin": bulk, "tail.zip": zipped("x.com", EICAR)})
    )
    assert code == 554 and "Test.EICAR" in text, text
    clean = message(**{"data.bin": bulk})
    assert len(clean) > 20_000_000
    code, text = await send(settings, ca, clean)
    assert code == 250, text
    (delivered,) = await received.wait_for(1, timeout=30)
    assert delivered.data.endswith(clean)


async def test_each_deny_kind_refuses_with_its_reason(relay, redis, ca):
    settings, received = relay
    lists = ListStore(redis, SystemClock())
    await lists.add(GLOBAL, ListKind.SENDER, "alice@example.org", ListAction.DENY, "phished", "t")
    code, text = await send(settings, ca, CLEAN)
    assert code == 550
    assert text == "5.7.1 Sender alice@example.org refused (global deny list): phished"
    await lists.remove(GLOBAL, ListKind.SENDER, "alice@example.org")

    await lists.add(GLOBAL, ListKind.RECIPIENT, "bob@example.com", ListAction.DENY, "asked", "t")
    code, text = await send(settings, ca, CLEAN)
    assert (code, text) == (
        550,
        "5.7.1 Recipient bob@example.com refused (global deny list): asked",
    )
    await lists.add("alice", ListKind.DOMAIN, "example.net", ListAction.DENY, "not ours", "t")
    code, text = await send(settings, ca, CLEAN, rcpts=("carol@example.net",))
    assert code == 550 and "(account alice deny list): not ours" in text
    assert received.count == 0


async def test_an_account_exception_overrides_a_global_deny(relay, redis, ca):
    settings, received = relay
    lists = ListStore(redis, SystemClock())
    await lists.add(GLOBAL, ListKind.DOMAIN, "example.com", ListAction.DENY, "blocked", "t")
    await lists.add("alice", ListKind.RECIPIENT, "bob@example.com", ListAction.ALLOW, "", "t")
    code, text = await send(settings, ca, CLEAN, rcpts=("carol@example.com",))
    assert code == 550 and text.endswith("(global deny list): blocked"), text
    code, _ = await send(settings, ca, CLEAN)
    assert code == 250, "the account's allow entry is its exception to the global deny"
    await received.wait_for(1, timeout=10)


async def test_allow_skips_the_spam_quarantine_but_never_the_malware_scan(relay, redis, ca):
    settings, received = relay
    lists = ListStore(redis, SystemClock())
    await lists.add("alice", ListKind.DOMAIN, "example.com", ListAction.ALLOW, "partner", "t")
    spammy = message(subject=f"offer {QUARANTINE_MARKER}")
    code, text = await send(settings, ca, spammy)
    assert code == 250 and "quarantine" not in text, text
    (delivered,) = await received.wait_for(1, timeout=10)
    assert delivered.data.endswith(spammy)
    code, text = await send(settings, ca, message(**{"a.com": EICAR}))
    assert code == 554, "allow lists never skip the malware scan"
    code, text = await send(settings, ca, message(text=f"pills {REJECT_MARKER}"))
    assert code == 550, "nor the spam reject (a hijacked account could list its targets)"
    counts = await ContentStats(redis).counts()
    assert counts["spam"]["alice"] == {"allowed": 1, "reject": 1}
