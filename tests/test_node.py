"""The node's pure decisions and shared counters: restart policy, exit status, SharedCounts."""

from __future__ import annotations

import os
import signal
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.node.restart import Restart, RestartPolicy, exit_status
from relay.node.shared import FULL, KEY_LIMIT, TOTAL_LIMIT, SharedCounts, _hash


def test_a_healthy_child_is_restarted_at_once_and_ends_the_streak() -> None:
    policy = RestartPolicy(healthy_after=30, first_delay=0.5, max_delay=30, give_up_after=5)
    assert policy.after_death(streak=3, ran_for=30.0) == Restart(0.0, 0)
    assert policy.after_death(streak=0, ran_for=3600) == Restart(0.0, 0)


def test_children_dying_at_start_wait_longer_each_time_then_the_supervisor_gives_up() -> None:
    policy = RestartPolicy(healthy_after=30, first_delay=0.5, max_delay=3, give_up_after=5)
    streak, delays = 0, []
    for _ in range(5):
        decision = policy.after_death(streak, ran_for=0.2)
        streak = decision.streak
        delays.append(decision.delay)
    assert delays == [0.5, 1.0, 2.0, 3.0, None]  # doubling, capped, then give up
    assert streak == 5


def test_exit_status_reads_as_an_operator_would() -> None:
    assert exit_status(0) == "exit code 0"
    assert exit_status(1 << 8) == "exit code 1"
    assert exit_status(signal.SIGKILL) == "killed by SIGKILL"


def test_limits_per_key_and_in_all_over_the_rows() -> None:
    counts = SharedCounts(rows=2, live=10)
    counts.bind(0)
    assert counts.acquire("a", per_key=2, total=3) is None
    counts.bind(1)  # another process's row: the same limits
    assert counts.acquire("a", per_key=2, total=3) is None
    assert counts.acquire("a", per_key=2, total=3) == KEY_LIMIT
    assert counts.acquire("b", per_key=2, total=3) is None
    assert counts.acquire("c", per_key=2, total=3) == TOTAL_LIMIT
    assert (counts.count("a"), counts.count("b"), counts.total()) == (2, 1, 3)
    counts.release("a")  # row 1's "a"
    counts.release("a")  # row 1 holds no more "a": ignored, row 0's stays
    assert counts.count("a") == 1 and counts.total() == 2


def test_reset_gives_back_everything_a_dead_row_held() -> None:
    counts = SharedCounts(rows=2, live=10)
    counts.bind(0)
    for _ in range(3):
        assert counts.acquire("a", per_key=3) is None
    counts.bind(1)
    assert counts.acquire("a", per_key=3) == KEY_LIMIT
    assert counts.reset(0) == 3  # the process of row 0 was killed with -9
    assert counts.acquire("a", per_key=3) is None
    assert counts.count("a") == 1 and counts.total() == 1


def test_keys_sharing_a_home_entry_keep_their_own_counts() -> None:
    counts = SharedCounts(rows=1, live=64)  # 256 entries for at most 64 keys
    counts.bind(0)
    keys = [f"10.0.0.{n}" for n in range(64)]
    homes = {_hash(key) % counts.slots for key in keys}
    assert len(homes) < len(keys), "the test needs keys whose home entries collide"
    for key in keys:
        assert counts.acquire(key, per_key=1) is None, key
    assert all(counts.acquire(key, per_key=1) == KEY_LIMIT for key in keys)
    for key in keys:
        counts.release(key)
    assert counts.total() == 0
    # Freed entries are reused by other keys; the old ones are gone for good.
    assert all(counts.acquire(f"other{n}", per_key=1) is None for n in range(64))
    assert counts.count(keys[0]) == 0 and counts.total() == 64


# Keys whose home entries are the first three of a 256-entry table: long shared windows.
_CROWDED = [k for k in (f"site{n}" for n in range(4000)) if _hash(k) % 256 < 3][:24]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.sampled_from(_CROWDED)), max_size=120))
def test_counts_match_a_plain_model_whatever_the_order_of_takes_and_gives(ops) -> None:
    """Lookups stop at an entry never used (a key is never placed past one): what each key
    holds is what a dict would say, after any order of acquires and releases."""
    counts = SharedCounts(rows=2, live=1)
    counts.bind(1)
    model: dict[str, int] = {}
    for take, key in ops:
        if take:
            answer = counts.acquire(key, per_key=2)
            assert answer == (KEY_LIMIT if model.get(key, 0) >= 2 else None)
            if answer is None:
                model[key] = model.get(key, 0) + 1
        else:
            counts.release(key)
            if model.get(key):
                model[key] -= 1
        assert all(counts.count(k) == model.get(k, 0) for k in _CROWDED)
    assert counts.total() == sum(model.values())


def test_a_full_probe_window_refuses_rather_than_counting_nothing() -> None:
    counts = SharedCounts(rows=1, live=1)  # overfilled on purpose: 256 entries
    counts.bind(0)
    results = [counts.acquire(str(n), per_key=1) for n in range(300)]
    placed = results.count(None)
    assert FULL in results and set(results) == {None, FULL}
    assert counts.total() == placed  # what was refused was not counted


def test_a_row_must_be_bound_before_counting() -> None:
    counts = SharedCounts(rows=2, live=10)
    with pytest.raises(RuntimeError):
        counts.acquire("a", per_key=1)
    with pytest.raises(ValueError):
        counts.bind(2)


def _hammer(counts: SharedCounts, row: int, rounds: int) -> int:
    """In a forked child: take and give back the one slot of "x"; count the times the
    table said two held it at once."""
    counts.bind(row)
    overlaps = 0
    for _ in range(rounds):
        if counts.acquire("x", per_key=1) is None:
            overlaps += counts.count("x") != 1
            counts.release("x")
    return overlaps


def test_two_processes_never_hold_one_slot_at_once() -> None:
    counts = SharedCounts(rows=2, live=4)
    pids = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        for row in range(2):
            pid = os.fork()
            if pid == 0:  # pragma: no cover (the child)
                code = 1
                try:
                    code = min(_hammer(counts, row, 3000), 100)
                finally:
                    os._exit(code)
            pids.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
    assert codes == [0, 0], "a slot was held by both processes at once"
    counts.bind(0)
    assert counts.total() == 0


def test_a_process_killed_while_holding_the_lock_does_not_wedge_the_node() -> None:
    counts = SharedCounts(rows=2, live=4)
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
        if pid == 0:  # pragma: no cover (the child)
            try:
                counts.bind(1)
                with counts.locked():
                    os.write(write_end, b"x")
                    signal.pause()
            finally:
                os._exit(0)
    os.read(read_end, 1)  # the child holds the lock now
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    os.close(read_end)
    os.close(write_end)
    counts.bind(0)
    assert counts.acquire("a", per_key=1) is None  # the kernel released the dead one's lock
