"""AUTH brute force and connection floods: slowed, then locked out, without locking out others."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from relay.accounts import unknown_login
from relay.submission.guard import AuthPolicy, ConnectionLimits, Streak, client_key
from tests.conftest import PASSWORD, add_sender
from tests.support.guarded import RawClient, attempt, guarded_stack

POLICY = AuthPolicy(
    delay_after=2,
    first_delay=0.01,  # real sleeps, kept tiny: the test checks the delays asked, not timing
    max_delay=0.04,
    lock_after=5,
    ip_lock_after=8,
    window=900,
    lockout=600,
)

# --- the pure policy ---


def test_delays_double_after_the_free_failures_up_to_the_cap():
    policy = AuthPolicy(delay_after=3, first_delay=1, max_delay=8)
    assert [policy.delay(n) for n in range(1, 10)] == [0, 0, 0, 1, 2, 4, 8, 8, 8]
    assert policy.delay(10_000) == 8


@given(st.integers(0, 10**6), st.integers(0, 10**6))
def test_delay_is_monotonic_and_bounded(a, b):
    policy = AuthPolicy()
    low, high = sorted((a, b))
    assert 0 <= policy.delay(low) <= policy.delay(high) <= policy.max_delay


def test_a_login_locks_at_its_threshold_until_the_lockout_ends():
    now = 1000.0
    fresh = Streak()
    assert POLICY.locked(Streak(4, now), fresh, known_ip=False, now=now) is None
    locked = POLICY.locked(Streak(5, now), fresh, known_ip=False, now=now + 1)
    assert locked is not None and (locked.subject, locked.until) == ("login", now + 600)
    assert locked.reply(now + 1) == "454 4.7.0 Too many failed logins; try again in 9m59s"
    assert POLICY.locked(Streak(5, now), fresh, known_ip=False, now=now + 600) is None


def test_a_known_address_is_exempt_from_the_login_lock_but_not_from_its_own():
    now = 1000.0
    assert POLICY.locked(Streak(9, now), Streak(), known_ip=True, now=now) is None
    locked = POLICY.locked(Streak(9, now), Streak(8, now), known_ip=True, now=now)
    assert locked is not None and locked.subject == "ip"


def test_a_success_is_written_only_when_it_changes_something():
    now = 10_000.0
    assert POLICY.must_record_success(0, 0.0, now), "a new address is remembered"
    assert POLICY.must_record_success(2, now - 10, now), "a streak is ended"
    assert not POLICY.must_record_success(0, now - 10, now), "known, recently: nothing to do"
    assert POLICY.must_record_success(0, now - 3600, now), "known, but refreshed hourly"
    assert POLICY.known(now - 10, now) and not POLICY.known(0.0, now)
    assert not POLICY.known(now - POLICY.known_ip_for, now)


def test_old_streaks_are_forgotten():
    assert POLICY.current(Streak(7, 1000.0), 1000.0 + 899) == 7
    assert POLICY.current(Streak(7, 1000.0), 1000.0 + 900) == 0


def test_lock_events_fire_once_at_the_threshold():
    assert POLICY.locks_now(5, 1) == ["login"]
    assert POLICY.locks_now(6, 8) == ["ip"]
    assert POLICY.locks_now(6, 9) == []


@pytest.mark.parametrize(
    "ip,key",
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("not an ip", "not an ip"),
    ],
)
def test_client_key_groups_an_ipv6_customer_by_its_64(ip, key):
    assert client_key(ip) == key


def test_connection_limits_count_per_address_and_in_all():
    limits = ConnectionLimits(total=3, per_ip=2)
    assert limits.admit("a") is None and limits.admit("a") is None
    assert limits.admit("a") == "421 4.7.0 Too many connections from a, try again later"
    assert limits.admit("b") is None
    assert limits.admit("c") == "421 4.3.2 Too many connections, try again later"
    limits.release("a")
    limits.release("zzz")  # never admitted: ignored
    assert limits.open == 2
    assert limits.admit("c") is None


# --- over real sockets and Redis ---


@pytest.mark.timeout(60)
async def test_brute_force_locks_the_login_and_the_address_but_not_other_users(
    redis, clock, server_cert, ca
):
    for login in ("alice", "bob"):
        await add_sender(redis, login)
    attacker, alices_office, bobs_office, elsewhere = (
        "127.0.0.10",
        "127.0.0.12",
        "127.0.0.11",
        "127.0.0.13",
    )
    async with guarded_stack(redis, clock, server_cert, ca, policy=POLICY) as stack:
        assert (await attempt(stack, "alice", PASSWORD, alices_office))[0] == 235
        with capture_logs() as logs:
            for _ in range(5):
                assert (await attempt(stack, "alice", "guess", attacker))[0] == 535
            # Locked: even the right password gets 454, without being checked.
            code, text = await attempt(stack, "alice", PASSWORD, attacker)
            assert (code, text) == (454, "4.7.0 Too many failed logins; try again in 10m00s")
            assert (await attempt(stack, "alice", PASSWORD, elsewhere))[0] == 454
            # Other users are not locked out, nor is alice from where she usually logs in.
            assert (await attempt(stack, "bob", PASSWORD, bobs_office))[0] == 235
            assert (await attempt(stack, "alice", PASSWORD, alices_office))[0] == 235
            # The attacker moves on to other logins: its address locks for every login.
            for login in ("carol", "dave", "erin"):
                assert (await attempt(stack, login, "guess", attacker))[0] == 535
            assert (await attempt(stack, "bob", PASSWORD, attacker))[0] == 454
            assert (await attempt(stack, "bob", PASSWORD, bobs_office))[0] == 235
        failed = [e for e in logs if e["event"] == "auth.failed"]
        assert [e["delay"] for e in failed[:5]] == [0.0, 0.0, 0.01, 0.02, 0.04]
        assert all("guess" not in repr(e) for e in logs), "passwords are never logged"
        locks = {(e["subject"], e["login"]) for e in logs if e["event"] == "auth.locked"}
        # erin is no account: the login typed is never logged, a keyed tag stands for it.
        assert locks == {("login", "alice"), ("ip", unknown_login("erin"))}
        assert all("erin" not in repr(e) for e in logs)
        refused = [e for e in logs if e["event"] == "auth.refused_locked"]
        assert {e["locked"] for e in refused} == {"login", "ip"}

        clock.advance(600)  # the lockout ends
        assert (await attempt(stack, "alice", PASSWORD, elsewhere))[0] == 235
        assert (await attempt(stack, "bob", PASSWORD, attacker))[0] == 235


async def test_a_success_ends_the_logins_streak(redis, clock, server_cert, ca):
    await add_sender(redis)
    async with guarded_stack(redis, clock, server_cert, ca, policy=POLICY) as stack:
        for source in ("127.0.0.20", "127.0.0.22"):  # each address stays under its own lock
            for _ in range(4):
                assert (await attempt(stack, "alice", "typo", source))[0] == 535
            assert (await attempt(stack, "alice", PASSWORD, source))[0] == 235
        # Eight failures of the login, never five in a row: not locked, from a new address either.
        assert (await attempt(stack, "alice", PASSWORD, "127.0.0.21"))[0] == 235


async def test_connections_beyond_the_per_address_limit_get_421(redis, clock, server_cert, ca):
    async with guarded_stack(
        redis, clock, server_cert, ca, max_connections_per_ip=3, max_connections=5
    ) as stack:
        held = []
        for _ in range(3):
            client = await RawClient.connect(stack.starttls_port, source="127.0.0.30")
            assert (await client.reply())[0] == 220
            held.append(client)
        extra = await RawClient.connect(stack.starttls_port, source="127.0.0.30")
        assert await extra.reply() == (
            421,
            "4.7.0 Too many connections from 127.0.0.30, try again later",
        )
        assert await extra.closed() == b""
        # Another address is served; the limit counts both listeners.
        other = await RawClient.connect(
            stack.implicit_port, tls=stack.client_tls, source="127.0.0.31"
        )
        assert (await other.reply())[0] == 220
        held.append(other)
        implicit = await RawClient.connect(
            stack.implicit_port, tls=stack.client_tls, source="127.0.0.30"
        )
        assert (await implicit.reply())[0] == 421
        await implicit.close()
        # The process-wide limit.
        fifth = await RawClient.connect(stack.starttls_port, source="127.0.0.32")
        assert (await fifth.reply())[0] == 220
        sixth = await RawClient.connect(stack.starttls_port, source="127.0.0.33")
        assert await sixth.reply() == (421, "4.3.2 Too many connections, try again later")
        # A closed session frees its slot (QUIT, or the client just going away).
        assert (await held[0].command(b"QUIT"))[0] == 221
        await held[0].close()
        await held[1].close()
        for _ in range(100):
            again = await RawClient.connect(stack.starttls_port, source="127.0.0.30")
            if (await again.reply())[0] == 220:
                break
            await again.close()
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("slots were not given back")
        for client in [*held[2:], fifth, again, extra, sixth]:
            await client.close()
