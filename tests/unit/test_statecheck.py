"""Checking local state (streams/state/check.py) and replacing damaged databases
(streams/state/files.py, StateStore.db and StateStore.discard), without a broker: the restore
from the changelog that follows a reset is covered by tests/integration/test_state_damage.py."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import orjson
import pytest
from rocksdict import Options, Rdict

from streams.processing.closing import PartitionClock
from streams.scoring.agent import AgentState, WindowTally
from streams.scoring.codec import encode_state
from streams.state.changelog import PERSISTED_OFFSET_KEY
from streams.state.check import (
    WHOLE_DATABASE,
    UnrepairableState,
    check_partition,
    clock_problem,
    drop_damaged,
    judge,
    offset_problem,
    positions_problem,
)
from streams.state.files import StateCounters, is_lock_error, open_or_wipe, wipe
from streams.state.localdb import open_partition_db
from streams.state.store import CLOCK_KEY, SIGNAL_POSITIONS_KEY, StateStore

TOPICS = 5


def _store(tmp_path: Path) -> StateStore:
    def no_producer() -> None:
        raise AssertionError("these tests write nothing to a changelog")

    return StateStore(state_dir=tmp_path, changelog_topic="changelog", producer=no_producer)


def _agent(window_start: int | None = None, last_close_tick: int = -1) -> AgentState:
    state = AgentState(last_close_tick=last_close_tick)
    if window_start is not None:
        state.open_windows[window_start] = WindowTally()
    return state


def _fill(store: StateStore, partition: int, entries: dict[bytes, bytes]) -> None:
    db = store.db(partition)
    for key, value in entries.items():
        db[key] = value


# -- judging one entry -----------------------------------------------------------------------


def test_a_clock_must_be_two_integers() -> None:
    assert clock_problem(PartitionClock(1_700_000_000_000, 42).encode()) is None
    assert clock_problem(b"\xff garbage") is not None
    assert clock_problem(b"[1, 2, 3, 4]") is not None
    assert clock_problem(b'[1, "2"]') is not None
    assert clock_problem(b"[true, 2]") is not None
    assert clock_problem(b"{}") is not None


def test_positions_must_be_one_offset_per_signal_topic() -> None:
    assert positions_problem(orjson.dumps([0, 5, 9, 0, 1]), TOPICS) is None
    assert positions_problem(orjson.dumps([0, 5, 9, 0]), TOPICS) is not None
    assert positions_problem(orjson.dumps([0, 5, 9, 0, -1]), TOPICS) is not None
    assert positions_problem(orjson.dumps([0, 5, 9, 0, 1.5]), TOPICS) is not None
    assert positions_problem(b"nope", TOPICS) is not None


def test_a_persisted_offset_must_be_a_number_from_minus_one() -> None:
    assert offset_problem(b"-1") is None
    assert offset_problem(b"123") is None
    assert offset_problem(b"-2") is not None
    assert offset_problem(b"twelve") is not None


def test_judge_returns_the_state_a_fine_reserved_entry_or_why_not() -> None:
    state = _agent(1_000)
    judged = judge(b"did:mesh:a", encode_state(state), TOPICS)
    assert judged == state
    assert judge(CLOCK_KEY, PartitionClock().encode(), TOPICS) is None
    assert judge(b"\x00reserved-by-a-later-release", b"\xff", TOPICS) is None
    assert "does not decode" in str(judge(b"did:mesh:a", b"\x00\xff", TOPICS))
    assert "does not decode" in str(judge(b"did:mesh:a", b"[99]", TOPICS))
    assert "not UTF-8" in str(judge(b"did:mesh:\xff", encode_state(state), TOPICS))
    assert isinstance(judge(SIGNAL_POSITIONS_KEY, b"[1]", TOPICS), str)


# -- checking a partition ----------------------------------------------------------------------


async def test_a_sound_partition_yields_its_count_and_window_schedule(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _fill(
        store,
        0,
        {
            CLOCK_KEY: PartitionClock(5_000, 7).encode(),
            SIGNAL_POSITIONS_KEY: orjson.dumps([1, 2, 3, 4, 5]),
            PERSISTED_OFFSET_KEY: b"41",
            b"did:mesh:a": encode_state(_agent(1_000)),
            b"did:mesh:b": encode_state(_agent(1_000, last_close_tick=7)),
            b"did:mesh:c": encode_state(_agent(None, last_close_tick=7)),
        },
    )
    check = await check_partition(store, 0, TOPICS)
    assert check.damaged == []
    assert check.agents == 3
    assert check.schedule.open_windows == {1_000: {b"did:mesh:a", b"did:mesh:b"}}
    assert check.schedule.closed_by_tick == {7: [b"did:mesh:b", b"did:mesh:c"]}


async def test_every_damaged_entry_is_named_and_left_out_of_the_schedule(
    tmp_path: Path,
) -> None:
    store = _store(tmp_path)
    _fill(
        store,
        1,
        {
            CLOCK_KEY: b"\x13\x37",
            b"did:mesh:good": encode_state(_agent(2_000)),
            b"did:mesh:bad": b"not a state",
        },
    )
    check = await check_partition(store, 1, TOPICS)
    assert [key for key, _ in check.damaged] == [CLOCK_KEY, b"did:mesh:bad"]
    assert check.agents == 1
    assert check.schedule.open_windows == {2_000: {b"did:mesh:good"}}
    first_only = await check_partition(store, 1, TOPICS, collect=False)
    assert [key for key, _ in first_only.damaged] == [CLOCK_KEY]


async def test_a_state_damaged_past_its_schedule_fields_is_found_by_its_crc(
    tmp_path: Path,
) -> None:
    store = _store(tmp_path)
    intact = encode_state(_agent(3_000, last_close_tick=4))
    damaged = intact.replace(b"[[]", b"[[1]", 1)  # a recent value slipped in; the tail intact
    assert damaged != intact and damaged.endswith(intact[-30:])
    older = orjson.dumps([3, *orjson.loads(intact)[1:21]])  # release 3 wrote no CRC
    _fill(store, 0, {b"did:mesh:a": damaged, b"did:mesh:b": intact, b"did:mesh:c": older})
    check = await check_partition(store, 0, TOPICS)
    assert [key for key, _ in check.damaged] == [b"did:mesh:a"]
    assert "CRC" in check.damaged[0][1]
    assert check.agents == 2
    assert check.schedule.open_windows == {3_000: {b"did:mesh:b", b"did:mesh:c"}}
    assert check.schedule.closed_by_tick == {4: [b"did:mesh:b", b"did:mesh:c"]}


def test_a_state_forged_with_a_matching_crc_is_dropped_where_it_is_met(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = _store(tmp_path)
    fields = orjson.loads(encode_state(_agent(3_000)))[:-1]
    fields[2] = [1, 2, 3]  # three dimensions' counts: not a state, whatever its CRC says
    unsealed = orjson.dumps(fields)[:-1]
    forged = b"%b,%d]" % (unsealed, zlib.crc32(unsealed))
    _fill(store, 0, {b"did:mesh:forged": forged, b"did:mesh:good": encode_state(_agent(1))})
    assert store.lookup(0, b"did:mesh:forged") is None
    assert "did:mesh:forged" in caplog.text and "deleted locally" in caplog.text
    assert store.counters.state_entries_dropped == 1
    assert store.db(0).get(b"did:mesh:forged") is None
    assert [key for key, _ in store.iter_agents(0)] == [b"did:mesh:good"]


def test_iterating_agents_skips_and_drops_a_forged_state_too(tmp_path: Path) -> None:
    store = _store(tmp_path)
    fields = orjson.loads(encode_state(_agent(3_000)))[:-1]
    fields[8] = "yes"  # revoked must be a boolean
    unsealed = orjson.dumps(fields)[:-1]
    forged = b"%b,%d]" % (unsealed, zlib.crc32(unsealed))
    _fill(store, 0, {b"did:mesh:forged": forged, b"did:mesh:good": encode_state(_agent(1))})
    assert [key for key, _ in store.iter_agents(0)] == [b"did:mesh:good"]
    assert store.counters.state_entries_dropped == 1
    assert store.db(0).get(b"did:mesh:forged") is None


async def test_dropping_damaged_entries_deletes_only_those_and_counts_them(
    tmp_path: Path,
) -> None:
    store = _store(tmp_path)
    good = encode_state(_agent(2_000))
    _fill(store, 2, {CLOCK_KEY: b"[", b"did:mesh:good": good, b"did:mesh:bad": b"\x00"})
    check = await check_partition(store, 2, TOPICS)
    drop_damaged(store, check)
    assert store.counters.state_entries_dropped == 2
    db = store.db(2)
    assert db.get(CLOCK_KEY) is None and db.get(b"did:mesh:bad") is None
    assert db.get(b"did:mesh:good") == good
    assert (await check_partition(store, 2, TOPICS)).damaged == []


def test_a_database_that_cannot_be_read_is_not_dropped_entry_by_entry(tmp_path: Path) -> None:
    from streams.state.check import PartitionCheck

    check = PartitionCheck(3, damaged=[(WHOLE_DATABASE, "database cannot be read: IO error")])
    with pytest.raises(UnrepairableState, match="partition 3"):
        drop_damaged(_store(tmp_path), check)


# -- databases that do not open ----------------------------------------------------------------


def _garbage_directory(directory: Path) -> None:
    wipe(directory)
    directory.mkdir(parents=True)
    for name in ("CURRENT", "MANIFEST-000001", "000005.sst", "OPTIONS-000007", "LOG"):
        (directory / name).write_bytes(os.urandom(4096))


def test_a_garbage_directory_is_replaced_by_an_empty_database(tmp_path: Path) -> None:
    store = _store(tmp_path)
    directory = store.directory / "partition-4"
    _garbage_directory(directory)
    with pytest.raises(Exception, match=r"Corruption|IO error"):
        open_partition_db(directory)
    db = store.db(4)
    assert list(db.keys()) == []
    assert store.counters.local_store_resets == 1
    db[b"did:mesh:a"] = b"x"  # usable


def test_a_database_with_a_corrupted_table_file_is_replaced(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _fill(store, 6, {f"did:mesh:{i:05d}".encode(): os.urandom(200) for i in range(5000)})
    store.db(6).flush()
    store.databases.close()  # as a restarted worker finds it
    (table,) = (store.directory / "partition-6").glob("*.sst")
    damaged = bytearray(table.read_bytes())
    for i in range(1000, len(damaged) - 200, 97):
        damaged[i] ^= 0xFF
    table.write_bytes(bytes(damaged))
    assert list(store.db(6).keys()) == []
    assert store.counters.local_store_resets == 1


def test_a_file_in_place_of_the_directory_is_replaced_too(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.directory.mkdir(parents=True)
    (store.directory / "partition-0").write_bytes(b"not a directory")
    assert list(store.db(0).keys()) == []
    assert store.counters.local_store_resets == 1


def test_a_database_locked_by_another_user_is_never_deleted(tmp_path: Path) -> None:
    directory = tmp_path / "partition-0"
    holder = open_partition_db(directory)
    holder[b"did:mesh:kept"] = b"state"
    try:
        with pytest.raises(Exception, match="lock") as raised:
            open_or_wipe(directory, open_partition_db, StateCounters())
        assert is_lock_error(raised.value)
        assert holder[b"did:mesh:kept"] == b"state"
    finally:
        holder.close()
    reopened = Rdict(str(directory), options=Options(raw_mode=True))
    assert reopened[b"did:mesh:kept"] == b"state"
    reopened.close()


def test_discard_closes_deletes_and_forgets_a_partition(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _fill(store, 5, {b"did:mesh:a": encode_state(_agent())})
    store.stage(5, b"did:mesh:a", _agent())
    store.discard(5)
    assert store.counters.local_store_resets == 1
    assert store.lookup(5, b"did:mesh:a") is None
    assert list(store.db(5).keys()) == []
