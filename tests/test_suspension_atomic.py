"""A suspension change is whole or absent: under concurrent changes and after `kill -9`.

Real Redis; the crash tests run the change in a child process that kills itself with SIGKILL
at a chosen step, then "restart" the relay's start-up replay in this process.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import textwrap
from pathlib import Path

import pytest
from redis.crc import key_slot

from quota import QuotaStore, Verdict
from relay.abuse.factory import suspension_service
from relay.accounts import AccountStore
from relay.config import Settings
from relay.queue import Envelope, QueueStore
from reputation import Kind, NotAllowed, Status
from tests.conftest import add_sender, client_of

ROOT = Path(__file__).resolve().parent.parent


def _settings(spool: Path) -> Settings:
    return Settings(hostname="relay.test", spool={"dir": str(spool)})


@pytest.fixture
async def alice(redis, clock):
    await add_sender(redis, "alice")
    await AccountStore(redis, clock).set_password("alice", "a new password")
    await redis.hset("acct:{alice}", "email", "alice@customer.example")


def _service(redis, clock, spool: Path):
    quota = QuotaStore(redis, default_per_minute=100, per_recipient=100)
    return suspension_service(redis, _settings(spool), clock, quota), quota


async def _audit_actions(service, account: str = "") -> list[str]:
    return [e.action for e in await service.audit.entries(account=account)]


async def test_two_concurrent_suspensions_make_one(alice, redis_server, clock, tmp_path):
    clients = [client_of(redis_server) for _ in range(4)]
    try:
        services = [_service(c, clock, tmp_path / "spool")[0] for c in clients]
        results = await asyncio.gather(
            *(
                s.suspend("alice", Kind.REPUTATION, f"listed {n}", {}, actor="system:monitor")
                for n, s in enumerate(services)
            )
        )
        service = services[0]
        assert len({r.id for r in results}) == 1, "one suspension, the others add evidence"
        assert [s.id for s in await service.store.of_account("alice")] == [results[0].id]
        actions = await _audit_actions(service, "alice")
        assert sorted(actions) == ["evidence"] * 3 + ["suspend"]
        assert (await _audit_actions(service)).count("suspend") == 1
        assert results[0].terms.offence == 1
    finally:
        for c in clients:
            await c.aclose()


async def test_two_concurrent_lifts_lift_once(alice, redis, redis_server, clock, tmp_path):
    service, quota = _service(redis, clock, tmp_path / "spool")
    s = await service.suspend("alice", Kind.ADMIN, "unpaid", {}, actor="operator:eve")
    clients = [client_of(redis_server) for _ in range(3)]
    try:
        services = [_service(c, clock, tmp_path / "spool")[0] for c in clients]
        results = await asyncio.gather(
            *(x.lift(s.id, actor=f"operator:{n}", reason="paid") for n, x in enumerate(services)),
            return_exceptions=True,
        )
    finally:
        for c in clients:
            await c.aclose()
    lifted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, NotAllowed)]
    assert len(lifted) == 1 and len(refused) == 2, results
    assert (await _audit_actions(service, "alice")).count("lift") == 1
    decision = await quota.reserve("alice", "tx", "bob@example.com", clock.now())
    assert decision.verdict is Verdict.ALLOWED


async def test_a_change_touches_one_slot_but_its_follow_ups(alice, redis, clock, tmp_path):
    """change.lua's keys share the account's tag; audit_copy.lua's keys share one slot."""
    from relay.abuse.audit import of_account
    from relay.abuse.changes import _outbox
    from relay.abuse.store import SuspensionStore

    keys = [
        SuspensionStore.index_key("alice"),
        SuspensionStore.record_key("alice", "x"),
        QuotaStore.state_key("alice"),
        of_account("alice"),
        _outbox("alice"),
    ]
    assert len({key_slot(k.encode()) for k in keys}) == 1, keys
    assert key_slot(b"audit") == key_slot(b"{audit}:copied")


_CHILD = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from quota import QuotaStore
    from relay.abuse import audit, service as service_module
    from relay.abuse.factory import suspension_service
    from relay.clock import FakeClock
    from relay.config import RedisSettings, Settings
    from relay.queue import QueueStore
    from relay.redis_client import connect_settings
    from reputation import Kind

    url, spool, step = sys.argv[1:4]

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    targets = {
        "hold": (QueueStore, "hold_account"),
        "audit_copy": (audit.AuditLog, "copy_to_all"),
        "drop_task": (service_module.AccountChanges, "done"),
    }
    cls, name = targets[step]
    setattr(cls, name, die)

    async def main():
        cluster = os.environ.get("RELAY_TEST_REDIS") == "cluster"
        where = {"cluster_nodes": [url]} if cluster else {"url": url}
        redis = connect_settings(RedisSettings(timeout="5s", **where))
        settings = Settings(hostname="relay.test", spool={"dir": spool})
        quota = QuotaStore(redis, default_per_minute=100, per_recipient=100)
        service = suspension_service(redis, settings, FakeClock(), quota)
        await service.suspend("alice", Kind.ABUSE, "complaint", {}, actor="operator:eve")

    asyncio.run(main())
    sys.exit(3)  # the kill did not happen
    """
)


@pytest.mark.parametrize("step", ["hold", "audit_copy", "drop_task"])
async def test_a_suspension_killed_between_steps_is_whole_after_restart(
    alice, redis, redis_server, clock, tmp_path, step
):
    spool = tmp_path / "spool"
    queue = QueueStore.from_settings(redis, clock, _settings(spool))
    queued = await queue.enqueue(
        Envelope("alice@customer.example", ("x@example.com",), "alice"), b"Subject: hi\r\n\r\nx\r\n"
    )
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CHILD,
        redis_server.url,
        str(spool),
        step,
        cwd=ROOT,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(child.communicate(), timeout=60)
    assert child.returncode == -signal.SIGKILL, err.decode()

    service, quota = _service(redis, clock, spool)
    # Killed: what the account's script wrote is whole already.
    (s,) = await service.store.of_account("alice")
    assert s.status is Status.OPEN
    decision = await quota.reserve("alice", "tx", "bob@example.com", clock.now())
    assert decision.verdict is Verdict.SUSPENDED
    assert await _audit_actions(service, "alice") == ["suspend"]

    assert await service.replay() == 1  # what `relay run` does as it starts
    assert (await queue.load(queued)).meta.held_at is not None, "the account's mail is held"
    assert await queue.held_accounts() == ["alice"]
    assert (await service.store.get(s.id)).id == s.id, "the global index has it"
    assert [x.id for x in await service.store.listing(open_only=True)] == [s.id]
    assert await _audit_actions(service) == ["suspend"], "one global audit entry"
    assert await _audit_actions(service, "alice") == ["suspend"]
    assert await service.replay() == 0, "nothing left to finish"
    notices = [m for m in await queue.list_messages(limit=100) if m.account == "system"]
    assert notices, "the customer is told (at least once)"
