import pytest

from relay.errors import NotFound
from relay.queue import Envelope, QueueStore
from relay.queue.model import split_by_domain


@pytest.fixture
def queue(redis, clock):
    return QueueStore(redis, clock)


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
    assert await queue.complete(first)
    assert (await queue.load(mid)).meta.jobs_left == 1
    assert await queue.complete(second)
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
    assert not await queue.complete(job), "a stale lease must not end the job"
    assert await queue.complete(again)


async def test_reschedule_keeps_pending_recipients_until_due(queue, clock):
    mid = await queue.enqueue(envelope("a@x.com", "b@x.com"), b"body")
    (job,) = await queue.claim(10, lease=60)
    assert await queue.reschedule(job, ("b@x.com",), clock.now() + 900, "451 try later")
    assert await queue.claim(10, lease=60) == []
    clock.advance(900)
    (retry,) = await queue.claim(10, lease=60)
    assert retry.recipients == ("b@x.com",) and retry.attempts == 1
    assert retry.last_error == "451 try later"
    [listed] = await queue.list_messages()
    assert listed.id == mid and (await queue.jobs_of(mid))[0].attempts == 1
