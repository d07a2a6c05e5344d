"""Paced garbage collection: young collections on a schedule, survivors frozen, full ones rare."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

from streams import gcpacing
from streams.gcpacing import (
    FULL_MIN_INTERVAL_S,
    GROWTH_CHECK_EVERY,
    YOUNG_INTERVAL_S,
    PacedCollection,
)
from streams.scoring.agent import AgentState, SignalTrigger, apply_signal
from streams.scoring.model import DEFAULT_WEIGHTS, ScoringConfig
from streams.scoring.windows import WindowPolicy


class FakeGc:
    """Records the calls; ``frozen`` is what get_freeze_count answers."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.frozen = 0

    def collect(self, generation: int = 2) -> int:
        self.calls.append(f"collect({generation})")
        return 7

    def freeze(self) -> None:
        self.calls.append("freeze")

    def unfreeze(self) -> None:
        self.calls.append("unfreeze")

    def get_freeze_count(self) -> int:
        return self.frozen


class Scene:
    """A paced collection over a fake collector, a clock moved by hand, and a memory size."""

    def __init__(self) -> None:
        self.gc = FakeGc()
        self.now = 0.0
        self.blocks = 1_000_000
        self.collection = PacedCollection(self.gc, lambda: self.now, lambda: self.blocks)

    def steps(self, count: int) -> list[str]:
        """What ``count`` steps did, each 0.1 s apart."""
        self.gc.calls.clear()
        for _ in range(count):
            self.collection.step()
            self.now += YOUNG_INTERVAL_S
        return self.gc.calls


YOUNG = ["collect(0)", "freeze"]
FULL = ["unfreeze", "collect(2)", "freeze"]


def test_every_step_collects_the_young_generation_and_freezes_what_survived() -> None:
    scene = Scene()
    assert scene.steps(1) == YOUNG + FULL  # the first one also collects everything, once
    assert scene.steps(GROWTH_CHECK_EVERY * 3) == YOUNG * GROWTH_CHECK_EVERY * 3
    stats = scene.collection.stats
    assert stats.collections == {"young": 1 + GROWTH_CHECK_EVERY * 3, "full": 1}
    assert stats.freed == 7
    assert stats.blocks == 1_000_000


def test_a_full_collection_once_memory_doubled_and_not_more_often_than_the_interval() -> None:
    scene = Scene()
    scene.steps(1)
    # Doubled, not more: none.
    scene.blocks = 2_000_000
    assert "unfreeze" not in scene.steps(GROWTH_CHECK_EVERY * 5)
    # More than doubled, but too soon after the last one: none yet.
    scene.blocks = 2_000_001
    assert "unfreeze" not in scene.steps(GROWTH_CHECK_EVERY)
    scene.now = FULL_MIN_INTERVAL_S + 1
    calls = scene.steps(GROWTH_CHECK_EVERY)
    assert calls.count("unfreeze") == 1
    full_at = calls.index("unfreeze")
    assert calls[full_at - 2 : full_at + 3] == YOUNG + FULL  # right after a young one
    assert scene.collection.stats.collections["full"] == 2
    # Measured from what the last one left: 2,000,001 blocks.
    scene.now += FULL_MIN_INTERVAL_S
    scene.blocks = 4_000_000
    assert "unfreeze" not in scene.steps(GROWTH_CHECK_EVERY)
    scene.blocks = 4_000_003
    assert scene.steps(GROWTH_CHECK_EVERY).count("unfreeze") == 1


def test_pauses_are_timed_by_kind() -> None:
    scene = Scene()
    ticks = iter(float(i) for i in range(100))
    scene.collection = PacedCollection(scene.gc, lambda: next(ticks) / 1000, lambda: 1)
    scene.collection.step()
    stats = scene.collection.stats
    assert stats.seconds["young"] == pytest.approx(0.001)
    assert stats.longest["full"] == pytest.approx(0.001)


@pytest.fixture
def own_collector() -> Iterator[None]:
    """The real collector, given back as found: enabled, nothing frozen."""
    enabled = gc.isenabled()
    gc.collect()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.collect()
        if enabled:
            gc.enable()


def churn(live: list[list[int]], rounds: int, per_round: int, between: object = None) -> int:
    """Replace the oldest ``per_round`` lists with new ones, ``rounds`` times (a worker's steady
    state: as many objects freed as made); the largest young generation seen."""
    largest = 0
    for round_ in range(rounds):
        start = (round_ * per_round) % len(live)
        for i in range(start, start + per_round):
            live[i] = [i]
        largest = max(largest, len(gc.get_objects(0)))
        if callable(between):
            between()
    return largest


@pytest.mark.usefixtures("own_collector")
def test_a_steady_state_fills_the_young_generation_unless_collections_are_paced() -> None:
    live = [[i] for i in range(50_000)]
    gc.collect()
    # CPython counts objects made minus objects freed: this churn never starts a collection,
    # and the young generation holds every list made since.
    unpaced = churn(live, rounds=20, per_round=2_000)
    assert unpaced >= 30_000
    gc.collect()
    collection = PacedCollection()
    paced_largest = churn(live, rounds=20, per_round=2_000, between=collection.step)
    assert paced_largest <= 2_000 + 1_000
    assert collection.stats.collections["young"] == 20


@pytest.mark.usefixtures("own_collector")
def test_frozen_objects_are_still_freed_when_dropped() -> None:
    class Held:
        pass

    collection = PacedCollection()
    collection.step()
    held = Held()
    collection.step()
    frozen = gc.get_freeze_count()
    assert any(obj is held for obj in gc.get_objects()) is False  # frozen: no generation has it
    del held
    assert gc.get_freeze_count() < frozen


async def test_run_collects_on_its_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gcpacing, "YOUNG_INTERVAL_S", 0.001)
    three = asyncio.Event()

    class Counting(FakeGc):
        def collect(self, generation: int = 2) -> int:
            if super().collect(generation) and self.calls.count("collect(0)") == 3:
                three.set()
            return 0

    fake = Counting()
    task = asyncio.ensure_future(PacedCollection(fake, blocks=lambda: 1).run())
    try:
        await asyncio.wait_for(three.wait(), timeout=5)
    finally:
        task.cancel()
    assert fake.calls[:5] == ["collect(0)", "freeze", "unfreeze", "collect(2)", "freeze"]


@pytest.mark.usefixtures("own_collector")
def test_a_signal_applied_leaves_no_object_for_the_collector_to_walk() -> None:
    """What a signal leaves in an agent's state (its value, its entry among the recent signals)
    is made of objects the collector does not track: 10,000 agents' worth of steady traffic
    leaves the young generation as it found it. (One tuple per signal, as the recent signals
    were once kept, made up 95% of it.)"""
    windows = WindowPolicy(size_ms=30_000, grace_ms=5_000)
    config = ScoringConfig.validated(DEFAULT_WEIGHTS)
    t0 = 1_795_000_000_000 - 1_795_000_000_000 % 30_000
    states = [AgentState() for _ in range(2_000)]

    def apply_one(offset: int) -> None:
        for i, state in enumerate(states):
            trigger = SignalTrigger(offset % 5, 0, offset, None)
            at = t0 + offset
            apply_signal(f"did:x:{i}", state, trigger, 0.9, at, at, at, windows, config, "src")

    for offset in range(12):  # past the recent signals kept: each new one replaces the oldest
        apply_one(offset)
    gc.collect()
    gc.disable()
    try:
        before = len(gc.get_objects(0))
        apply_one(12)
        left = len(gc.get_objects(0)) - before
    finally:
        gc.enable()
    assert left < 50
