"""What bounds a worker's memory for agent state: the decoded-state cache by estimated bytes as well
as by count, and RocksDB by one budget across every partition database."""

from __future__ import annotations

import os
import time
import tracemalloc
from pathlib import Path

import pytest
from rocksdict import WriteBatch

from streams.scoring.agent import AgentState, WindowTally
from streams.scoring.codec import decode_state, encode_state
from streams.scoring.explained import explained_entry
from streams.state.cache import held_bytes
from streams.state.localdb import RocksMemory, open_partition_db
from streams.state.store import StateStore


def _state(recent_values: int, history: int, explained: int = 0) -> AgentState:
    state = AgentState()
    state.recent = [[0.1 + i / 1000 for i in range(recent_values)] for _ in range(5)]
    state.history = [(1_795_000_000_000 + i * 30_000, 500 + i) for i in range(history)]
    state.recent_signals = [
        explained_entry(i % 5, 0.5, "source-x", 1_795_000_000_000 + i) for i in range(explained)
    ]
    for start in range(0, 30_000 * (explained // 5), 30_000):
        state.open_windows[1_795_000_000_000 + start] = WindowTally([1, 2, 3, 4, 5], 0)
    return state


def _store(tmp_path: Path, **options: int) -> StateStore:
    return StateStore(
        state_dir=tmp_path, changelog_topic="t.agent-state", producer=lambda: None, **options
    )


@pytest.mark.parametrize("encoded", [False, True], ids=["decoded", "encoded since"])
def test_the_estimate_is_within_a_third_of_what_a_decoded_state_takes(encoded: bool) -> None:
    """Whether or not the state was encoded since it was decoded: the codec keeps parts of its
    last encoding with the state."""
    for shape in ((0, 0, 0), (20, 5, 3), (0, 20, 10), (100, 100, 10)):
        raw = encode_state(_state(*shape))
        tracemalloc.start()
        try:
            states = [decode_state(raw) for _ in range(200)]
            if encoded:
                for state in states:
                    encode_state(state)
            measured = tracemalloc.get_traced_memory()[0] / len(states)
        finally:
            tracemalloc.stop()
        estimate = held_bytes(states[0])
        assert measured * 0.67 <= estimate <= measured * 1.33, (shape, measured, estimate)


def test_the_cache_stops_at_its_byte_budget_whatever_the_count(tmp_path: Path) -> None:
    full = held_bytes(_state(100, 100))
    store = _store(tmp_path, cache_agents=1_000, cache_bytes=10 * full)
    for i in range(50):
        store.remember(0, f"did:x:{i}".encode(), _state(100, 100))
    assert store.cached_bytes <= 10 * full
    assert store.cached(0, b"did:x:49") is not None  # the most recent stay
    assert store.cached(0, b"did:x:0") is None  # the oldest went first
    assert sum(store.cached(0, f"did:x:{i}".encode()) is not None for i in range(50)) == 10


def test_a_state_that_grows_in_place_is_charged_again_when_remembered(tmp_path: Path) -> None:
    store = _store(tmp_path, cache_agents=1_000, cache_bytes=10**9)
    state = _state(0, 0)
    store.remember(0, b"did:x:1", state)
    small = store.cached_bytes
    state.recent = [[0.5] * 100 for _ in range(5)]
    store.remember(0, b"did:x:1", state)
    assert store.cached_bytes == held_bytes(state) > small
    store.forget({0})
    assert store.cached_bytes == 0


def test_the_count_limit_still_applies(tmp_path: Path) -> None:
    store = _store(tmp_path, cache_agents=3, cache_bytes=10**9)
    for i in range(5):
        store.remember(i % 2, f"did:x:{i}".encode(), _state(1, 1))
    assert [store.cached(i % 2, f"did:x:{i}".encode()) is not None for i in range(5)] == [
        False,
        False,
        True,
        True,
        True,
    ]
    assert store.cached_bytes == 3 * held_bytes(_state(1, 1))


def _write_six_partitions(store: StateStore) -> dict[str, int]:
    payload = os.urandom(4096)
    for partition in range(6):
        db = store.db(partition)
        for i in range(3_000):  # 12 MiB per partition: 72 MiB written in all
            db[f"did:x:{i}".encode()] = payload
    return store.rocksdb_memory()


def test_rocksdb_memory_is_one_budget_across_partitions(tmp_path: Path) -> None:
    budget = 16 * 1024 * 1024
    unbounded = _write_six_partitions(_store(tmp_path / "unbounded"))
    bounded_store = _store(tmp_path / "bounded", rocksdb_memory_bytes=budget)
    bounded = _write_six_partitions(bounded_store)
    # Each database on its own keeps up to two 16 MiB memtables: far more than the budget.
    assert unbounded["memtables"] > 3 * budget
    # One cache for all, the memtables charged to it. A soft limit (writers are never stalled):
    # memtables past it are flushed in the background, so it holds once those flushes are done.
    deadline = time.monotonic() + 30
    while bounded["memtables"] > budget * 1.1 and time.monotonic() < deadline:
        time.sleep(0.05)
        bounded = bounded_store.rocksdb_memory()
    assert bounded["memtables"] <= budget * 1.1
    # The cache reserves a MiB at a time per database for the memtables it is charged with.
    assert bounded["block_cache"] <= budget + 8 * 1024 * 1024


def test_a_reopened_database_reads_through_the_shared_budget_not_its_stored_options(
    tmp_path: Path,
) -> None:
    """rocksdict reloads an existing database's stored column-family options (with a fresh 8 MiB
    block cache) unless they are given for the family too: then the budget was not applied to
    any database a worker opened again, and a table file's index over 512 KiB was read and
    decompressed again on every lookup."""
    directory = tmp_path / "partition-0"
    first = open_partition_db(directory, RocksMemory.of(64 * 1024 * 1024))
    keys = [f"did:mesh:reopened-{i:06d}".encode() for i in range(200_000)]
    batch = WriteBatch(raw_mode=True)
    for key in keys:
        batch.put(key, b"v" * 40)
    first.write(batch)
    first.flush()
    first.compact_range(None, None)  # one table file, its index block larger than 512 KiB
    first.close()

    memory = RocksMemory.of(64 * 1024 * 1024)
    db = open_partition_db(directory, memory)
    before = memory.cache.get_usage()
    for key in keys[::1000]:
        assert db.get(key) == b"v" * 40
    # The index and data blocks read went into the budget's cache (with the stored options they
    # went into a cache of rocksdict's own, and the index into none).
    assert memory.cache.get_usage() - before > 512 * 1024
    db.close()
