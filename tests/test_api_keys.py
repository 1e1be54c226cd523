"""API keys verified once are remembered by the process for `http.api_key_cache`: a
revocation by another process takes effect within that time, by this one at once."""

from __future__ import annotations

from relay.accounts.api_keys import ApiKey, ApiKeys, VerifiedKeys, hash_secret
from relay.clock import FakeClock


async def test_a_verified_key_is_not_read_again_until_its_time_is_up(redis):
    clock = FakeClock()
    keys = ApiKeys(redis, clock, cache_for=5)
    record, key = await keys.add("alice")
    assert await keys.authenticate(key) == record
    await ApiKeys(redis, clock).revoke("alice", record.id)  # `relay apikey revoke` elsewhere
    clock.advance(4.9)
    assert await keys.authenticate(key) == record  # remembered: no read, still taken
    clock.advance(0.1)
    assert await keys.authenticate(key) is None  # read again: revoked


async def test_a_key_revoked_or_removed_by_this_process_ends_at_once(redis):
    keys = ApiKeys(redis, FakeClock(), cache_for=5)
    record, key = await keys.add("alice")
    assert await keys.authenticate(key) == record
    await keys.revoke("alice", record.id)
    assert await keys.authenticate(key) is None
    record, key = await keys.add("alice")
    assert await keys.authenticate(key) == record
    await keys.remove_all("alice")
    assert await keys.authenticate(key) is None


async def test_a_remembered_key_still_needs_its_secret(redis):
    keys = ApiKeys(redis, FakeClock(), cache_for=5)
    record, key = await keys.add("alice")
    assert await keys.authenticate(key) == record
    prefix, _, secret = key.rpartition("_")
    wrong = f"{prefix}_{'A' * len(secret)}"
    assert await keys.authenticate(wrong) is None
    assert await keys.authenticate(key) == record


async def test_without_a_cache_every_request_reads_the_record(redis):
    clock = FakeClock()
    keys = ApiKeys(redis, clock, cache_for=0)
    record, key = await keys.add("alice")
    assert await keys.authenticate(key) == record
    await ApiKeys(redis, clock).revoke("alice", record.id)
    assert await keys.authenticate(key) is None


def test_verified_keys_forget_the_oldest_past_their_size_and_a_clock_going_back():
    verified = VerifiedKeys(ttl=5, size=2)
    found = {n: ApiKey(f"id{n}", "alice", 0.0, "send") for n in range(3)}
    for n, key in found.items():
        verified.put(key, hash_secret(f"s{n}"), now=100.0)
    assert verified.get("id0", hash_secret("s0"), 101.0) is None
    assert verified.get("id2", hash_secret("s2"), 101.0) == found[2]
    assert verified.get("id1", hash_secret("s1"), 99.0) is None  # the clock went back: read
