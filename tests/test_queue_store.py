import pytest
from structlog.testing import capture_logs

from relay.errors import InvalidInput, NotFound, StoreUnavailable
from relay.queue import (
    LEASE_LOST,
    NOTICE_QUEUED,
    Envelope,
    Finished,
    LastError,
    Notice,
    QueueStore,
)
from relay.queue.model import split_by_domain
from relay.redis_client import Along
from tests.support.spool import temp_spool


@pytest.fixture
def queue(redis, clock):
    return QueueStore(redis, clock, temp_spool())


LATER = LastError(451, "4.4.1", "later")


def envelope(*rcpts: str) -> Envelope:
    return Envelope(mail_from="sender@example.org", recipients=rcpts, account="alice")


def test_split_by_domain_groups_and_dedups():
    groups = split_by_domain(("a@X.com", "b@y.com", "A@x.com", "c@x.com."))
    assert groups == {"x.com": ("a@X.com", "c@x.com."), "y.com": ("b@y.com",)}


async def test_enqueue_makes_one_job_per_domain(queue):
    mid = await queue.enqueue(envelope("a@x.com", "b@y.com", "c@x.com"), b"body\r\n")
    stored = await queue.load(mid)
    assert stored.body == b"body\r\n" and stored.meta.jobs_left == 2
    jobs = await queue.claim(10, lease=60)
    assert sorted((j.domain, j.recipients) for j in jobs) == [
        ("x.com", ("a@x.com", "c@x.com")),
        ("y.com", ("b@y.com",)),
    ]


async def test_message_removed_when_last_job_ends(queue):
    mid = await queue.enqueue(envelope("a@x.com", "b@y.com"), b"body")
    first, second = await queue.claim(10, lease=60)
    assert await queue.complete(first) is Finished.DONE
    assert (await queue.load(mid)).meta.jobs_left == 1
    assert await queue.complete(second) is Finished.DONE
    with pytest.raises(NotFound):
        await queue.load(mid)
    assert await queue.count() == 0 and await queue.next_due() is None


async def test_claimed_job_is_not_claimed_twice_until_lease_expires(queue, clock):
    await queue.enqueue(envelope("a@x.com"), b"body")
    (job,) = await queue.claim(10, lease=60)
    assert await queue.claim(10, lease=60) == []
    clock.advance(61)  # the worker died: the lease runs out
    (again,) = await queue.claim(10, lease=60)
    assert again.id == job.id
    assert await queue.complete(job) is Finished.LEASE_LOST, "a stale lease must not end the job"
    assert await queue.complete(again) is Finished.DONE


async def test_reschedule_keeps_pending_recipients_until_due(queue, clock):
    mid = await queue.enqueue(envelope("a@x.com", "b@x.com"), b"body")
    (job,) = await queue.claim(10, lease=60)
    later = LastError(451, "4.3.0", "try later", "127.0.0.2", "mx.x.com")
    assert await queue.reschedule(job, ("b@x.com",), clock.now() + 900, later) is Finished.DONE
    assert await queue.claim(10, lease=60) == []
    clock.advance(900)
    (retry,) = await queue.claim(10, lease=60)
    assert retry.recipients == ("b@x.com",) and retry.attempts == 1
    assert retry.last_error == later, "stored as fields, read back whole"
    [listed] = await queue.list_messages()
    assert listed.id == mid and (await queue.jobs_of(mid))[0].attempts == 1


def notice(queue, kind="failure", delay="plain", recipient="sender@example.org") -> Notice:
    return Notice(
        id=queue.new_id(),
        recipient=recipient,
        account="alice",
        body=b"Subject: notice\r\n\r\nx\r\n",
        kind=kind,
        delay=delay,
    )


async def test_notice_is_queued_with_the_end_of_the_attempt(queue):
    mid = await queue.enqueue(envelope("a@x.com"), b"body")
    (job,) = await queue.claim(10, lease=60)
    note = notice(queue)
    assert await queue.complete(job, note) is NOTICE_QUEUED
    with pytest.raises(NotFound):
        await queue.load(mid)
    stored = await queue.load(note.id)
    assert stored.body == note.body
    assert (stored.meta.mail_from, stored.meta.recipients) == ("", ("sender@example.org",))
    assert stored.meta.notice == "failure" and stored.meta.account == "alice"
    (notice_job,) = await queue.claim(10, lease=60)
    assert (notice_job.message_id, notice_job.domain) == (note.id, "example.org")


async def test_stale_lease_queues_no_notice(queue, clock):
    await queue.enqueue(envelope("a@x.com"), b"body")
    (job,) = await queue.claim(10, lease=60)
    clock.advance(61)
    await queue.claim(10, lease=60)
    note = notice(queue)
    assert await queue.complete(job, note) is LEASE_LOST
    with pytest.raises(NotFound):
        await queue.load(note.id)


async def test_the_delay_notice_is_queued_once_per_message(queue, clock):
    mid = await queue.enqueue(envelope("a@x.com", "b@y.com"), b"body")
    first, second = await queue.claim(10, lease=60)
    one, two, three = (notice(queue, "delay", "delay") for _ in range(3))
    assert (
        await queue.reschedule(first, first.recipients, clock.now() + 900, LATER, one)
        is NOTICE_QUEUED
    )
    assert (
        await queue.reschedule(second, second.recipients, clock.now() + 900, LATER, two)
        is Finished.DONE
    )
    assert (await queue.load(mid)).meta.delay_notified
    with pytest.raises(NotFound):
        await queue.load(two.id)
    clock.advance(900)
    job, other = [j for j in await queue.claim(10, lease=60) if j.message_id == mid]
    assert (
        await queue.reschedule(other, other.recipients, clock.now() + 900, LATER, three)
        is Finished.DONE
    )
    with pytest.raises(NotFound):
        await queue.load(three.id)
    mixed = notice(queue, "failure", "with-delay")
    assert await queue.complete(job, mixed) is NOTICE_QUEUED, "a failure is always reported"


async def test_hold_while_leased_parks_the_job_when_the_attempt_ends(queue, clock):
    mid = await queue.enqueue(envelope("a@x.com"), b"body")
    (job,) = await queue.claim(10, lease=60)
    assert await queue.hold(mid)
    assert await queue.reschedule(job, job.recipients, clock.now() + 900, LATER) is Finished.DONE
    clock.advance(10_000)
    assert await queue.claim(10, lease=60) == []
    [held] = await queue.jobs_of(mid)
    assert held.held and held.attempts == 1
    assert await queue.release(mid)
    assert [j.id for j in await queue.claim(10, lease=60)] == [job.id]


async def test_held_job_whose_worker_died_is_not_claimed_again(queue, clock):
    mid = await queue.enqueue(envelope("a@x.com"), b"body")
    (job,) = await queue.claim(10, lease=60)
    assert await queue.hold(mid)
    clock.advance(61)  # the lease ends without a finish
    assert await queue.claim(10, lease=60) == []
    assert await queue.complete(job) is Finished.LEASE_LOST, "its lease is gone"
    assert (await queue.jobs_of(mid))[0].held


async def test_retry_skips_leased_jobs_and_refuses_held_messages(queue, clock):
    mid = await queue.enqueue(envelope("a@x.com", "b@y.com"), b"body")
    [first] = await queue.claim(1, lease=60)
    assert await queue.retry(mid) == 1, "the unclaimed job only"
    [other] = await queue.claim(10, lease=60)
    assert other.id != first.id, "the leased job stays with its worker"
    assert await queue.hold(mid)
    with pytest.raises(InvalidInput):
        await queue.retry(mid)
    with pytest.raises(NotFound):
        await queue.retry("nope")
    with pytest.raises(NotFound):
        await queue.hold("nope")


async def test_account_index_follows_the_messages(queue):
    one = await queue.enqueue(envelope("a@x.com"), b"body")
    two = await queue.enqueue(envelope("b@x.com"), b"body")
    assert await queue.messages_of("alice") == sorted([one, two])
    (job, _) = await queue.claim(10, lease=60)
    await queue.complete(job)
    await queue.delete(two if job.message_id == one else one)
    assert await queue.messages_of("alice") == []
    assert await queue.hold_account("alice") == 0
    assert await queue.held_accounts() == ["alice"]
    assert await queue.release_account("alice") == 0
    assert await queue.held_accounts() == []


async def test_every_key_of_a_nodes_queue_shares_its_cluster_slot(queue, redis):
    await queue.enqueue(envelope("a@x.com", "b@y.com"), b"body")
    (job, _) = await queue.claim(2, lease=60)
    await queue.hold_account("bob")
    await queue.hold(job.message_id)
    keys = {k.decode() async for k in redis.scan_iter("*")}
    fleet = {"queue:nodes", "queue:held_accounts"}
    assert fleet <= keys
    tag = "{q:" + queue.node + "}:"
    assert len(keys - fleet) >= 7 and all(k.startswith(tag) for k in keys - fleet)


def _counter(key: str) -> Along:
    return Along("counter.failed", lambda pipe: pipe.incr(key), {"key": key})


async def test_what_rides_along_an_enqueue_runs_once_even_when_redis_forgot_the_script(
    queue, redis
):
    await redis.script_flush()  # as after a restart of Redis: the next EVALSHA is NOSCRIPT
    mid = await queue.enqueue_spooled(
        envelope("a@x.com"),
        await queue.spool.write(queue.new_id(), b"body"),
        b"",
        [_counter("along")],
    )
    assert (await queue.load(mid)).body == b"body", "queued all the same"
    assert await redis.get("along") == b"1", "and what rode along ran exactly once"
    (job,) = await queue.claim(10, lease=60)
    assert await queue.complete(job, along=[_counter("along")]) is Finished.DONE
    assert await redis.get("along") == b"2"


async def test_a_failure_of_what_rides_along_is_logged_and_the_step_stands(queue, redis):
    await redis.set("not-a-hash", "x")
    broken = Along("bookkeeping.failed", lambda pipe: pipe.hincrby("not-a-hash", "f", 1))
    with capture_logs() as logs:
        mid = await queue.enqueue_spooled(
            envelope("a@x.com"), await queue.spool.write(queue.new_id(), b"body"), b"", [broken]
        )
    assert (await queue.load(mid)).meta.jobs_left == 1
    (failed,) = [entry for entry in logs if entry["event"] == "bookkeeping.failed"]
    assert "WRONGTYPE" in failed["error"]


async def test_a_failing_enqueue_raises_even_with_bookkeeping_along(queue, redis):
    await redis.set(queue.keys.due, "not a zset")  # the script stops with an error
    with pytest.raises(StoreUnavailable):
        await queue.enqueue_spooled(
            envelope("a@x.com"),
            await queue.spool.write(queue.new_id(), b"body"),
            b"",
            [_counter("along")],
        )
