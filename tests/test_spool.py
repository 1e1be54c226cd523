"""The spool: bodies on disk as they arrive, durable before the 250, gone when the message
ends, never dropped in silence when missing, and a budget for the bytes in flight."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys

import pytest
import structlog

from relay.errors import NotFound
from relay.queue import Envelope
from relay.spool import InflightBudget
from tests.conftest import add_sender
from tests.support.engine import BODY, engine
from tests.support.guarded import guarded_stack

HEADERS = b"From: alice@example.org\r\nTo: bob@example.com\r\nSubject: big\r\n\r\n"


async def transaction(stack, body: bytes, *, size: int | None = None) -> tuple[int, str]:
    """One whole transaction over implicit TLS; the reply to the end of DATA (or the first
    refusal)."""
    from tests.test_hostile_input import authenticated

    client = await authenticated(stack)
    try:
        mail = b"MAIL FROM:<alice@example.org>" + (b" SIZE=%d" % size if size else b"")
        code, text = await client.command(mail)
        if code != 250:
            return code, text
        assert (await client.command(b"RCPT TO:<bob@example.com>"))[0] == 250
        code, text = await client.command(b"DATA")
        if code != 354:
            return code, text
        await client.send(body + b".\r\n")
        return await client.reply(timeout=60)
    finally:
        await client.close()


def base64_lines(size: int) -> bytes:
    line = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\r\n"
    return line * (size // len(line))


@pytest.fixture
async def stack(redis, clock, server_cert, ca):
    await add_sender(redis)
    async with guarded_stack(redis, clock, server_cert, ca, max_message_size=30_000_000) as s:
        yield s


async def test_a_large_body_goes_to_disk_as_sent_and_redis_keeps_only_metadata(stack, redis):
    small_body = HEADERS + b"Hello.\r\n"
    big_body = HEADERS + base64_lines(20_000_000)
    sizes = {}
    for body in (small_body, big_body):
        code, text = await transaction(stack, body)
        assert code == 250, text
        queue_id = text.split()[-1]
        spooled = stack.queue.spool.path(queue_id).read_bytes()
        assert spooled == body, "the spool holds the content byte for byte"
        stored = await stack.queue.load(queue_id)
        assert stored.body.endswith(body) and stored.body.startswith(b"Received: ")
        sizes[len(body)] = await redis.memory_usage(stack.queue.keys.msg(queue_id))
    small, big = sizes[len(small_body)], sizes[len(big_body)]
    assert big < 2_000 and abs(big - small) < 100, f"Redis bytes per message: {sizes}"


async def test_spool_folders_and_files_are_private(stack):
    code, text = await transaction(stack, HEADERS + b"x\r\n")
    assert code == 250
    path = stack.queue.spool.path(text.split()[-1])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(stack.queue.spool.root.stat().st_mode) == 0o700


async def test_a_refused_or_broken_transfer_leaves_no_file(stack):
    spool = stack.queue.spool
    code, _ = await transaction(stack, HEADERS + b"y" * 20_000 + b"\r\n")  # line too long
    assert code == 500
    code, _ = await transaction(stack, HEADERS + base64_lines(31_000_000))
    assert code == 552
    assert list(spool.entries()) == []


async def test_inflight_budget_refuses_new_transfers_with_452(redis, clock, server_cert, ca):
    await add_sender(redis)
    budget = InflightBudget(1_000_000)
    async with guarded_stack(redis, clock, server_cert, ca, budget=budget) as stack:
        code, text = await transaction(stack, HEADERS + b"x\r\n", size=2_000_000)
        assert (code, text[:5]) == (452, "4.3.1"), "declared SIZE past the budget"
        budget.take(1_000_000)  # another transfer holds the whole budget
        code, text = await transaction(stack, HEADERS + b"x\r\n")
        assert (code, text[:5]) == (452, "4.3.1")
        budget.give(1_000_000)
        code, _ = await transaction(stack, HEADERS + b"x\r\n")
        assert code == 250 and budget.used == 0, "every byte taken is given back"


async def test_a_nearly_full_disk_refuses_data_with_452(redis, clock, server_cert, ca):
    await add_sender(redis)
    async with guarded_stack(redis, clock, server_cert, ca, min_free=1 << 62) as stack:
        code, text = await transaction(stack, HEADERS + b"x\r\n")
        assert (code, text[:5]) == (452, "4.3.1") and "storage" in text
        assert list(stack.queue.spool.entries()) == []


async def test_delivered_mail_leaves_the_spool(redis, clock, sink):
    received, port = sink
    async with engine(redis, clock, routes={"*": f"127.0.0.1:{port}"}) as e:
        queue_id = await e.submit("bob@dest.test")
        assert e.queue.spool.exists(queue_id)
        await e.step()
        assert len(received.messages) == 1
        assert not e.queue.spool.exists(queue_id)
        assert list(e.queue.spool.entries()) == []


async def test_a_missing_body_is_reported_and_retried_never_dropped(redis, clock, sink):
    received, port = sink
    async with engine(redis, clock, routes={"*": f"127.0.0.1:{port}"}) as e:
        queue_id = await e.submit("bob@dest.test")
        os.rename(e.queue.spool.path(queue_id), e.queue.spool.root / "aside")
        with structlog.testing.capture_logs() as logs:
            await e.step()
        assert any(x["event"] == "spool.unreadable" and x["log_level"] == "error" for x in logs)
        (job,) = await e.queue.jobs_of(queue_id)
        assert job.last_error is not None and job.last_error.status == "4.3.0"
        assert job.last_error.text.startswith("cannot read the message")
        assert received.messages == []
        os.rename(e.queue.spool.root / "aside", e.queue.spool.path(queue_id))  # disk is back
        await e.step(e.settings.retry_interval.seconds)
        assert len(received.messages) == 1 and received.messages[0].data.endswith(BODY)
        with pytest.raises(NotFound):
            await e.queue.meta(queue_id)


async def test_spool_check_finds_orphans_and_missing_bodies(redis, redis_server, tmp_path):
    config = tmp_path / "relay.toml"
    config.write_text(
        f'[redis]\nurl = "{redis_server.url}"\n[spool]\ndir = "{tmp_path / "spool"}"\n'
        'orphan_grace = "0s"\n'
    )
    from relay.clock import SystemClock
    from relay.config import load_settings
    from relay.queue import QueueStore

    queue = QueueStore.from_settings(redis, SystemClock(), load_settings(config))
    kept = await queue.enqueue(Envelope("a@example.org", ("b@example.com",), "alice"), BODY)
    lost = await queue.enqueue(Envelope("a@example.org", ("c@example.com",), "alice"), BODY)
    queue.spool.remove(lost)
    orphan = queue.new_id()
    await queue.spool.write(orphan, b"left by a crash")

    def check(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "relay", "--config", str(config), "spool", "check", *extra],
            capture_output=True,
            text=True,
            timeout=60,
        )

    result = await asyncio.to_thread(check)
    assert result.returncode == 1, result.stderr
    assert f"orphan  {orphan}" in result.stdout and f"MISSING {lost}" in result.stdout
    assert kept not in result.stdout
    assert "1 queued message(s) have no body" in result.stderr
    result = await asyncio.to_thread(check, "--remove-orphans")
    assert "removed 1 orphan file(s)" in result.stdout
    assert not queue.spool.exists(orphan) and queue.spool.exists(kept)


# --- the file of a body: when it is made, and what a failure or a cancel leaves ---


def ids(n: int) -> list[str]:
    return [os.urandom(8).hex() for _ in range(n)]


async def test_a_usual_body_is_held_and_made_durable_in_one_step_at_commit():
    from tests.support.spool import temp_spool

    spool = temp_spool()
    (small,) = ids(1)
    incoming = spool.receive(small)
    incoming.write(HEADERS + b"Hello.\r\n")
    assert not spool.exists(small), "no file (nor its creation on a thread) before commit"
    spooled = await incoming.commit()
    assert spooled.head == HEADERS and spooled.size == len(HEADERS) + 8
    assert await spool.read(small) == HEADERS + b"Hello.\r\n"
    assert stat.S_IMODE(spool.path(small).stat().st_mode) == 0o600


async def test_a_body_past_what_is_held_streams_to_its_file():
    from relay.spool.store import HELD
    from tests.support.spool import temp_spool

    spool = temp_spool()
    (big,) = ids(1)
    incoming = spool.receive(big)
    piece = b"x" * 76 + b"\r\n"
    body = HEADERS + piece * (HELD // len(piece) + 10)
    incoming.write(body[:1000])
    assert not spool.exists(big)
    incoming.write(body[1000:])
    assert spool.path(big).stat().st_size == len(body), "written as it arrived"
    await incoming.commit()
    assert await spool.read(big) == body


async def test_an_aborted_body_leaves_no_file_held_or_streamed():
    from relay.spool.store import HELD
    from tests.support.spool import temp_spool

    spool = temp_spool()
    small, big = ids(2)
    for message_id, size in ((small, 10), (big, HELD + 10)):
        incoming = spool.receive(message_id)
        incoming.write(b"x" * size)
        incoming.abort()
    assert list(spool.entries()) == []


async def test_a_commit_whose_caller_is_cancelled_leaves_no_file():
    from tests.support.spool import temp_spool

    spool = temp_spool()
    (message_id,) = ids(1)
    incoming = spool.receive(message_id)
    incoming.write(HEADERS)
    commit = asyncio.ensure_future(incoming.commit())
    await asyncio.sleep(0)  # the thread has the job: the file is being made
    commit.cancel()
    with pytest.raises(asyncio.CancelledError):
        await commit
    incoming.abort()  # what the server does when the body was not spooled
    for _ in range(200):  # the thread finishes in its own time, then the file goes
        if not spool.path(message_id).parent.exists() or not list(spool.entries()):
            break
        await asyncio.sleep(0.01)
    assert list(spool.entries()) == []


async def test_a_body_that_cannot_be_created_is_a_spool_error_and_leaves_nothing(tmp_path):
    from relay.spool import Spool, SpoolError

    spool = Spool(tmp_path / "spool")
    (message_id,) = ids(1)
    incoming = spool.receive(message_id)
    incoming.write(HEADERS)
    spool.path(message_id).write_bytes(b"someone else's")  # the name is taken (O_EXCL)
    with pytest.raises(SpoolError, match="cannot create"):
        await incoming.commit()
    incoming.abort()
    assert spool.path(message_id).read_bytes() == b"someone else's", "not ours to remove"


async def test_free_space_is_read_again_at_most_once_a_second_unless_it_refuses(tmp_path):
    from relay.spool import Spool

    class Counted(Spool):  # the disk's answer, counted (and set by the test)
        reads = 0
        free = 10_000

        def free_bytes(self) -> int:
            self.reads += 1
            return self.free

    spool = Counted(tmp_path / "spool")
    assert all(spool.has_room(1_000) for _ in range(50)) and spool.reads == 1
    spool.free = 500  # the disk filled up: the reading in hand still says there is room
    assert spool.has_room(1_000) and spool.reads == 1
    assert not spool.has_room(20_000), "more than the reading had: read again, refused"
    assert spool.reads == 2
    assert not spool.has_room(1_000) and spool.reads == 3, "a refusal is always fresh"


async def test_bodies_ended_together_are_removed_together_each_with_its_answer():
    from tests.support.spool import temp_spool

    spool = temp_spool()
    hops: list[int] = []
    remove_all = spool._remove_all

    def counted(message_ids: list[str]) -> list[bool | Exception]:
        hops.append(len(message_ids))
        return remove_all(message_ids)

    spool._remove_all = counted  # type: ignore[method-assign]
    present = ids(20)
    for message_id in present:
        await spool.write(message_id, b"body")
    (absent,) = ids(1)
    answers = await asyncio.gather(*(spool.discard(m) for m in [*present, absent]))
    assert answers == [True] * 20 + [False]
    assert list(spool.entries()) == []
    assert hops == [21], "one hop to a thread for all of them"
    # Asked while a removal is on its thread: they wait for it, then go together.
    more = ids(6)
    for message_id in more:
        await spool.write(message_id, b"body")
    first = asyncio.ensure_future(spool.discard(more[0]))
    await asyncio.sleep(0.001)
    rest = [asyncio.ensure_future(spool.discard(m)) for m in more[1:]]
    assert await asyncio.gather(first, *rest) == [True] * 6
    assert hops[1:] in ([1, 5], [6]) and list(spool.entries()) == []
