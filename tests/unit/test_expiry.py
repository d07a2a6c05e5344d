"""Removing idle agents (streams/processing/expiry.py): who may be removed, when a partition is
swept, and the sweep itself over a real RocksDB database (its changelog tombstones are covered by
tests/integration/test_agent_ttl.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from streams.processing.closing import PartitionSchedule, PendingCloses
from streams.processing.expiry import (
    AgentExpiry,
    forget_in_schedule,
    is_expired,
    last_activity_ms,
    next_due,
    scan_interval_seconds,
)
from streams.scoring.agent import AgentState, WindowTally
from streams.scoring.codec import encode_state
from streams.state.store import CLOCK_KEY, StateStore

NOW = 1_800_000_000_000
TTL = 60_000


def _idle(for_ms: int, **fields: Any) -> AgentState:
    return AgentState(last_signal_at_ms=NOW - for_ms, **fields)


# -- the decision ------------------------------------------------------------------------------


def test_an_agent_idle_for_the_ttl_expires_and_a_recent_one_does_not() -> None:
    assert is_expired(_idle(TTL), NOW, TTL)
    assert is_expired(_idle(10 * TTL), NOW, TTL)
    assert not is_expired(_idle(TTL - 1), NOW, TTL)


def test_an_open_window_or_a_revocation_keeps_an_idle_agent() -> None:
    assert not is_expired(_idle(10 * TTL, open_windows={0: WindowTally()}), NOW, TTL)
    assert not is_expired(_idle(10 * TTL, revoked=True), NOW, TTL)
    reinstated = _idle(10 * TTL, revoked=False, revocation_count=1)
    assert is_expired(reinstated, NOW, TTL)


def test_without_a_recorded_signal_time_the_last_recalculation_stands_in() -> None:
    older = AgentState(history=[(NOW - 5 * TTL, 400), (NOW - 2 * TTL, 420)])
    assert last_activity_ms(older) == NOW - 2 * TTL
    assert is_expired(older, NOW, TTL)
    recent = AgentState(history=[(NOW - TTL // 2, 420)])
    assert not is_expired(recent, NOW, TTL)
    # Nothing says when it was last active: kept, rather than guessed away.
    assert not is_expired(AgentState(), NOW, TTL)


def test_a_partition_is_read_every_tenth_of_the_ttl_within_bounds() -> None:
    assert scan_interval_seconds(100.0) == 10.0
    assert scan_interval_seconds(8.64) == 1.0
    assert scan_interval_seconds(30 * 86_400.0) == 3600.0


def test_the_partition_swept_longest_ago_is_next_once_due() -> None:
    assert next_due([], {}, 100.0, 10.0) == (None, 10.0)
    assert next_due([2, 0, 1], {}, 100.0, 10.0) == (0, 0.0)
    assert next_due([0, 1], {0: 95.0, 1: 89.0}, 100.0, 10.0) == (1, 0.0)
    partition, wait = next_due([0, 1], {0: 95.0, 1: 93.0}, 100.0, 10.0)
    assert partition is None and abs(wait - 3.0) < 1e-9


def test_removed_agents_leave_the_window_schedule() -> None:
    gone, kept = b"did:mesh:gone", b"did:mesh:kept"
    schedule = PartitionSchedule(
        open_windows={0: {gone, kept}},
        closed_by_tick={7: [gone, kept]},
        pending=PendingCloses([gone, kept]),
    )
    forget_in_schedule(schedule, {gone})
    assert schedule.open_windows == {0: {kept}}
    assert schedule.closed_by_tick == {7: [kept]}
    assert list(schedule.pending) == [kept]


# -- the sweep ---------------------------------------------------------------------------------


class _Sweepable:
    """A real store (RocksDB in a temporary directory) whose changelog is a list."""

    def __init__(self, tmp_path: Path) -> None:
        self.store = StateStore(state_dir=tmp_path, changelog_topic="c", producer=lambda: None)
        self.tombstones: list[bytes] = []
        self.store.delete_agents = self._delete  # type: ignore[method-assign]
        self.pipeline = SimpleNamespace(
            store=self.store,
            _turn=asyncio.Lock(),
            restored={0},
            failed=None,
            schedules={},
            handlers=SimpleNamespace(republishing=SimpleNamespace(settled=lambda partition: True)),
            durability=SimpleNamespace(unconfirmed=lambda partition, key: False),
        )

    async def _delete(self, partition: int, keys: Sequence[bytes]) -> None:
        db = self.store.db(partition)
        for key in keys:
            del db[key]
        self.tombstones.extend(keys)

    def expiry(self, **options: Any) -> AgentExpiry:
        return AgentExpiry(self.pipeline, TTL / 1000, wall_ms=lambda: NOW, **options)  # type: ignore[arg-type]


async def test_a_sweep_removes_only_idle_unheld_agents_in_slices(tmp_path: Path) -> None:
    env = _Sweepable(tmp_path)
    db = env.store.db(0)
    db[CLOCK_KEY] = b"[0, -1]"
    idle = [f"did:mesh:idle-{i:04d}".encode() for i in range(600)]
    active = [f"did:mesh:active-{i:04d}".encode() for i in range(300)]
    for key in idle:
        db[key] = encode_state(_idle(2 * TTL))
    for key in active:
        db[key] = encode_state(_idle(TTL // 3))
    staged = idle[17]
    env.store.stage(0, staged, _idle(2 * TTL))  # about to be written: never removed now
    env.store.counters.agents[0] = 900
    env.pipeline.schedules[0] = PartitionSchedule(closed_by_tick={3: [idle[0], active[0]]})

    # A slice far shorter than the partition: the sweep must resume exactly where it stopped.
    removed = await env.expiry(slice_seconds=0.0).sweep(0)

    assert removed == 599
    assert sorted(env.tombstones) == sorted(k for k in idle if k != staged)
    left = [k for k in db.keys() if not k.startswith(b"\x00")]  # noqa: SIM118 (raw mode)
    assert sorted(left) == sorted([*active, staged])
    assert db[CLOCK_KEY] == b"[0, -1]"
    assert env.store.counters.agents_expired == 599
    assert env.store.counters.agents[0] == 301
    assert env.pipeline.schedules[0].closed_by_tick == {3: [active[0]]}


async def test_a_sweep_stops_when_its_partition_is_given_up(tmp_path: Path) -> None:
    env = _Sweepable(tmp_path)
    db = env.store.db(0)
    for i in range(200):
        db[f"did:mesh:idle-{i:04d}".encode()] = encode_state(_idle(2 * TTL))
    env.pipeline.restored = set()
    assert await env.expiry().sweep(0) == 0
    assert env.tombstones == []


async def test_signal_batches_get_their_turn_between_slices(tmp_path: Path) -> None:
    env = _Sweepable(tmp_path)
    db = env.store.db(0)
    for i in range(3000):
        db[f"did:mesh:a-{i:05d}".encode()] = encode_state(_idle(TTL // 2))
    sweep = asyncio.ensure_future(env.expiry(slice_seconds=0.0).sweep(0))
    await asyncio.sleep(0)  # the sweep takes the lock for its first slice
    async with env.pipeline._turn:  # a signal batch
        assert not sweep.done(), "a batch waited for the whole sweep"
    assert await sweep == 0


def test_off_by_default() -> None:
    assert not AgentExpiry(SimpleNamespace(store=None), 0.0).enabled  # type: ignore[arg-type]
