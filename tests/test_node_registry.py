"""The node registry's pure parts: a record's state, its round trip through a Redis hash,
the spool count and its pacing, the node id of the config, and the heartbeat against a real
Redis (keys one slot each, the drain read back into the shared flag)."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from relay.clock import FakeClock
from relay.config import RedisSettings, Settings
from relay.errors import ConfigError
from relay.node.directory import NodeDirectory
from relay.node.drain import DrainFlag
from relay.node.heartbeat import Heartbeat, SpoolGauge, rescan_after, spool_usage
from relay.node.registry import NodeRecord, beat_age, node_key, node_state
from relay.redis_client import connect_blocking, text_dict
from tests.conftest import redis_settings

RECORD = NodeRecord(
    id="node-a",
    version="0.1.0",
    host="host-a",
    pid=4242,
    processes=4,
    spool_files=12,
    spool_bytes=34_000,
    egress=("192.0.2.1", "2001:db8::1"),
    listeners=("0.0.0.0:587 (starttls)",),
    state="accepting",
    started_at=1_800_000_000.0,
    beat_at=1_800_000_100.0,
    beat_every=2.0,
    down_after=5,
)


def test_a_node_is_down_once_silent_for_its_own_down_after_beats() -> None:
    beat = RECORD.beat_at
    assert node_state(RECORD, beat) == "accepting"
    assert node_state(RECORD, beat + 10.0) == "accepting"  # 5 beats of 2 s: not yet
    assert node_state(RECORD, beat + 10.001) == "down"
    quick = replace(RECORD, beat_every=0.2, down_after=3)
    assert node_state(quick, beat + 0.5) == "accepting"
    assert node_state(quick, beat + 0.7) == "down"


def test_what_a_node_said_holds_while_it_beats_and_stopped_is_not_down() -> None:
    draining = replace(RECORD, state="draining")
    assert node_state(draining, RECORD.beat_at + 1) == "draining"
    assert node_state(draining, RECORD.beat_at + 60) == "down"
    stopped = replace(RECORD, state="stopped")
    assert node_state(stopped, RECORD.beat_at + 86400) == "stopped"


def test_a_beat_from_a_clock_ahead_is_not_a_negative_age() -> None:
    assert beat_age(RECORD, RECORD.beat_at - 3) == 0.0
    assert beat_age(RECORD, RECORD.beat_at + 1.5) == 1.5


def test_a_record_round_trips_through_its_hash_and_the_drain_is_the_operators() -> None:
    fields = RECORD.fields()
    assert "drain" not in fields, "a beat never overwrites the operator's word"
    assert NodeRecord.parse(fields) == RECORD
    asked = NodeRecord.parse(fields | {"drain": "1800000050.5"})
    assert asked is not None and asked.drain_asked == 1800000050.5
    shown = RECORD.as_dict(RECORD.beat_at + 11)
    assert shown["state"] == "down" and shown["reported_state"] == "accepting"
    assert shown["egress"] == ["192.0.2.1", "2001:db8::1"] and shown["beat_age"] == 11.0


@pytest.mark.parametrize(
    "fields",
    [
        {"drain": "1800000000.0"},  # a drain for a node that never beat
        RECORD.fields() | {"state": "on fire"},
        RECORD.fields() | {"processes": "many"},
        {k: v for k, v in RECORD.fields().items() if k != "beat_at"},
    ],
)
def test_what_is_not_a_record_is_none(fields: dict[str, str]) -> None:
    assert NodeRecord.parse(fields) is None


def test_each_node_has_its_own_slot() -> None:
    assert node_key("node-a") == "node:{node-a}"


def test_counting_the_spool_takes_at_most_a_twentieth_of_the_time() -> None:
    assert rescan_after(0.0) == 0.0
    assert rescan_after(0.01) == pytest.approx(0.19)  # a small spool: every beat
    assert rescan_after(2.0) == pytest.approx(38.0)  # a million bodies: every ~40 s


def test_the_spool_count_sees_the_bodies_in_their_folders(tmp_path: Path) -> None:
    assert spool_usage(tmp_path / "missing") == (0, 0)
    (tmp_path / "ab").mkdir()
    (tmp_path / "ab" / "0123456789ab").write_bytes(b"x" * 100)
    (tmp_path / "cd").mkdir()
    (tmp_path / "cd" / "01234567cd").write_bytes(b"y" * 20)
    (tmp_path / "stray").write_bytes(b"not in a folder")
    assert spool_usage(tmp_path) == (2, 120)


def test_the_gauge_counts_again_only_when_its_pacing_says(tmp_path: Path) -> None:
    ticks = iter([0.0, 1.0, 1.5, 30.0, 30.0])
    gauge = SpoolGauge(tmp_path, monotonic=lambda: next(ticks))
    assert gauge.measure() == (0, 0)  # counted at 0.0, took 1 s: next count at 20
    (tmp_path / "ab").mkdir()
    (tmp_path / "ab" / "0123456789ab").write_bytes(b"x" * 10)
    assert gauge.measure() == (0, 0), "the last count, not a new one"
    assert gauge.measure() == (1, 10)


def test_the_node_id_defaults_to_the_host_name_and_must_be_a_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings().node.id == os.uname().nodename
    assert Settings(node={"id": "eu-1.relay_2"}).node.id == "eu-1.relay_2"
    for bad in ("a b", "node:{x}", "x" * 65, "été"):
        with pytest.raises(ValueError, match="not a node id"):
            Settings(node={"id": bad})
    monkeypatch.setattr("socket.gethostname", lambda: "host with spaces")
    from relay.config import load_settings

    with pytest.raises(ConfigError, match=r"^node\.id: not a node id: 'host with spaces'"):
        load_settings(None)


async def test_a_beat_writes_the_record_and_reads_the_drain_back(redis, redis_server) -> None:
    clock = FakeClock()
    settings = Settings(node={"id": "node-b", "heartbeat": "1s", "down_after": 3})
    drain = DrainFlag()
    heartbeat = Heartbeat(settings, drain, clock)
    client = connect_blocking(redis_settings(redis_server), 2.0)
    directory = NodeDirectory(redis, clock)
    try:
        heartbeat.beat(client, 3)
        (record,) = await directory.list()
        assert (record.id, record.processes, record.state) == ("node-b", 3, "accepting")
        assert record.beat_at == clock.now() and record.beat_every == 1.0
        assert await redis.zscore("nodes", "node-b") == clock.now()

        assert await directory.drain("node-b") is True
        assert await directory.drain("node-b") is False
        assert not drain.is_set()
        heartbeat.beat(client, 3)  # reads the drain: every process sees it from now
        assert drain.is_set()
        heartbeat.beat(client, 3)
        assert (await directory.get("node-b")).state == "draining"  # type: ignore[union-attr]
        assert "drain" in text_dict(await redis.hgetall(node_key("node-b")))

        assert await directory.resume("node-b") is True
        heartbeat.beat(client, 3)
        assert not drain.is_set()

        clock.advance(2.9)
        with pytest.raises(Exception, match="only a node that is down or stopped"):
            await directory.forget("node-b")
        clock.advance(0.2)  # 3.1 s > 3 beats of 1 s: down
        assert node_state(await directory.get("node-b"), clock.now()) == "down"  # type: ignore[arg-type]
        await directory.forget("node-b")
        assert await directory.list() == []
        assert await redis.exists(node_key("node-b"), "nodes") == 0
    finally:
        client.close()


async def test_a_beat_that_fails_keeps_the_drain_it_knew(redis_server) -> None:
    settings = Settings(node={"id": "node-c"})
    drain = DrainFlag()
    drain.set(True)
    heartbeat = Heartbeat(settings, drain, FakeClock())
    client = connect_blocking(RedisSettings(url=f"redis://127.0.0.1:{_closed_port()}/0"), 0.5)
    try:
        heartbeat.beat(client, 1)  # logged once (node.beat_failed), never raised
        heartbeat.beat(client, 1)
    finally:
        client.close()
    assert drain.is_set()


def _closed_port() -> int:
    from tests.conftest import free_port

    return free_port()


def test_a_row_of_node_list_reads_as_an_operator_would() -> None:
    from relay.cli.nodes import row, size_text

    assert [size_text(n) for n in (0, 999, 1000, 21_900_000, 3 * 10**12)] == [
        "0 B",
        "999 B",
        "1.0 KB",
        "21.9 MB",
        "3000.0 GB",
    ]
    line = row(RECORD, RECORD.beat_at + 0.8)
    assert line.split() == [
        "node-a", "0.1.0", "4", "proc", "12", "files", "34.0", "KB", "0.8s", "ago",
        "accepting", "192.0.2.1,2001:db8::1",
    ]  # fmt: skip
    asked = row(replace(RECORD, drain_asked=RECORD.beat_at), RECORD.beat_at + 0.8)
    assert "draining (asked)" in asked
    assert " down " in row(RECORD, RECORD.beat_at + 60)
