"""A turn applies only the signals that fit in a few milliseconds (streams/processing/turns.py):
a backlog is applied over many short turns, and a critical signal read meanwhile goes ahead of
what is left of it rather than waiting for a batch of thousands."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from streams.kafka.topics import TopicNames
from streams.processing.pipeline import ScoringPipeline
from streams.processing.turns import (
    CATCH_UP_SECONDS,
    INITIAL_SECONDS_PER_SIGNAL,
    MIN_TURN_SIGNALS,
    SIGNAL_TURN_SECONDS,
    SignalTurnBudget,
)
from streams.scoring.model import DEFAULT_WEIGHTS, ScoringConfig
from streams.scoring.windows import WindowPolicy
from tests.support.fake_kafka import FakeMessage, FakeProducer
from tests.support.unit_pipeline import unit_pipeline

NAMES = TopicNames("turns.")
NOW_MS = 1_795_000_020_000
#: 1.5 s ago: live (the worker is not catching up), and not held by the merge for its time.
LIVE_MS = NOW_MS - 1_500
#: Ten minutes ago: a backlog, caught up with in whole batches.
OLD_MS = NOW_MS - 600_000
CONFIG = ScoringConfig.validated(DEFAULT_WEIGHTS, 300, 500)
BACKLOG = 1_000


def test_a_fresh_budget_allows_what_fits_at_the_initial_cost() -> None:
    budget = SignalTurnBudget(2_000)
    assert budget.signals() == int(SIGNAL_TURN_SECONDS / INITIAL_SECONDS_PER_SIGNAL)


def test_cheap_signals_allow_longer_turns_up_to_the_batch_size() -> None:
    budget = SignalTurnBudget(2_000)
    for _ in range(50):
        budget.observe(100, 100 * 10e-6, 0.1)
    assert budget.signals() == pytest.approx(SIGNAL_TURN_SECONDS / 10e-6, rel=0.02)
    small = SignalTurnBudget(150)
    for _ in range(50):
        small.observe(100, 100 * 1e-6, 0.1)
    assert small.signals() == 150


def test_costly_signals_shorten_turns_to_the_floor_and_no_further() -> None:
    budget = SignalTurnBudget(2_000)
    for _ in range(50):
        budget.observe(10, 10 * 1e-3, 0.1)
    assert budget.signals() == MIN_TURN_SIGNALS
    assert SignalTurnBudget(5).signals() == 5  # a batch size below the floor still bounds it


def test_turns_that_applied_nothing_leave_the_estimate_alone() -> None:
    budget = SignalTurnBudget(2_000)
    budget.observe(0, 0.5, 0.0)
    budget.observe(10, 0.0, 0.0)
    assert budget.seconds_per_signal == INITIAL_SECONDS_PER_SIGNAL
    with pytest.raises(ValueError):
        SignalTurnBudget(0)


def test_signals_long_past_take_whole_batches_until_the_worker_has_caught_up() -> None:
    budget = SignalTurnBudget(2_000)
    budget.observe(100, 100 * 30e-6, CATCH_UP_SECONDS + 0.5)
    assert budget.signals() == 2_000
    budget.observe(2_000, 2_000 * 30e-6, CATCH_UP_SECONDS - 0.5)
    assert budget.signals() == int(SIGNAL_TURN_SECONDS / 30e-6)


def _signal(offset: int, did: str, value: float, at_ms: int, dimension: int = 0) -> FakeMessage:
    body = {"agent_did": did, "value": value, "source": "s"}
    return FakeMessage(NAMES.signals[dimension], 0, offset, did.encode(), orjson.dumps(body), at_ms)


def _applied(pipeline: ScoringPipeline) -> int:
    return sum(pipeline.counters.signals_applied)


def _pipeline(directory: Path) -> ScoringPipeline:
    return unit_pipeline(
        directory,
        FakeProducer(),
        names=NAMES,
        windows=WindowPolicy(size_ms=30_000, grace_ms=5_000),
        config=CONFIG,
        now_ms=NOW_MS,
    )


async def test_a_live_backlog_goes_in_short_turns_and_a_critical_signal_overtakes_it(
    tmp_path: Path,
) -> None:
    pipeline = _pipeline(tmp_path)
    backlog = [_signal(i, f"did:x:bulk-{i}", 0.9, LIVE_MS + i // 10) for i in range(BACKLOG)]
    allowed = pipeline.turn_budget.signals()
    await pipeline.process_records(backlog)
    first_turn = _applied(pipeline)
    assert 0 < first_turn == allowed < BACKLOG

    # Stamped after the whole backlog, on another topic: the merge would release it last.
    critical = _signal(0, "did:x:critical", 0.0, LIVE_MS + BACKLOG // 10 + 1, dimension=3)
    await pipeline.process_records([critical])
    assert pipeline.counters.applied_ahead == 1
    assert _applied(pipeline) <= first_turn + 1 + pipeline.turn_budget.most
    assert pipeline.merge.held() > 0, "the backlog is not drained yet"

    turns = 0
    while _applied(pipeline) < BACKLOG + 1:
        turns += 1
        assert turns <= BACKLOG // MIN_TURN_SIGNALS + 1, "draining the backlog stalled"
        await pipeline.process_records([])
    assert pipeline.counters.signals_applied[0] == BACKLOG
    assert turns >= 2


async def test_a_backlog_long_past_is_caught_up_with_in_whole_batches(tmp_path: Path) -> None:
    pipeline = _pipeline(tmp_path)
    backlog = [_signal(i, f"did:x:old-{i}", 0.9, OLD_MS + i) for i in range(BACKLOG)]
    await pipeline.process_records(backlog)
    first_turn = _applied(pipeline)
    assert first_turn == int(SIGNAL_TURN_SECONDS / INITIAL_SECONDS_PER_SIGNAL)  # not behind yet
    await pipeline.process_records([])
    assert _applied(pipeline) == BACKLOG  # the rest in one turn: it was long past
