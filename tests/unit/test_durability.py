"""The durability protocol under every failure: the worker "dies" after each Kafka acknowledgement
in turn (its objects abandoned, a new pipeline built on the same state directory), and a delivery
or changelog batch is refused or left unanswered. Whatever the point, no signal position is stored
past a state or an output Kafka has not confirmed, and replaying from the stored positions ends in
the same states and outputs as a run that never failed, an output published twice only as the
same bytes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.errors import KafkaTimeoutError

from streams.kafka.topics import TopicNames
from streams.processing.closing import encode_tick
from streams.processing.pipeline import ScoringPipeline
from streams.scoring.model import DEFAULT_WEIGHTS, ScoringConfig
from streams.scoring.windows import WindowPolicy
from streams.state.store import CLOCK_KEY, SIGNAL_POSITIONS_KEY, StateStore
from tests.support.fake_kafka import FakeEvent, FakeMessage, FakeProducer, Metadata
from tests.support.unit_pipeline import unit_pipeline

NAMES = TopicNames("durable.")
NOW_MS = 1_795_000_000_000
CONFIG = ScoringConfig.validated(DEFAULT_WEIGHTS, 450, 600)
#: The weights an operator published while the worker was down: an output recomputed on replay,
#: instead of re-published as recorded, would carry them.
NEW_CONFIG = ScoringConfig.validated((0.3, 0.2, 0.2, 0.2, 0.1), 450, 600, version=2)


class Acks(FakeProducer):
    """Acknowledges the first ``budget`` sends (batches or records), then holds every later one
    unanswered; ``refusing`` topics fail their sends as the broker would."""

    def __init__(self, budget: int | None = None) -> None:
        super().__init__()
        self.budget = budget
        self.held: list[asyncio.Future[Any]] = []
        self.acks = 0

    def _future(
        self, topic: str, partition: int, rows: list[tuple[Any, Any]]
    ) -> asyncio.Future[Any]:
        if self.budget is not None:
            if self.budget == 0:
                future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
                self.held.append(future)
                return future
            self.budget -= 1
        self.acks += 1
        return super()._future(topic, partition, rows)


def _signals() -> list[FakeMessage]:
    """Two agents: one driven below the threshold (a revocation), one well behaved."""
    messages = []
    offsets = [0] * len(NAMES.signals)
    for round_ in range(3):
        for dimension, topic in enumerate(NAMES.signals):
            for did, value in (("did:x:falling", 0.0), ("did:x:steady", 0.9)):
                body = {"agent_did": did, "value": value, "source": f"s{round_}"}
                offset = offsets[dimension]
                offsets[dimension] += 1
                messages.append(
                    FakeMessage(topic, 0, offset, did.encode(), orjson.dumps(body), NOW_MS)
                )
    return messages


def _pipeline(
    directory: Path, producer: FakeProducer, now_ms: int = NOW_MS, config: ScoringConfig = CONFIG
) -> ScoringPipeline:
    windows = WindowPolicy(size_ms=30_000, grace_ms=5_000)
    return unit_pipeline(
        directory, producer, names=NAMES, windows=windows, config=config, now_ms=now_ms
    )


async def _run(pipeline: ScoringPipeline, signals: list[FakeMessage]) -> None:
    """What the feed does: batches from the stored positions, then a checkpoint."""
    positions = pipeline.signal_positions(0)
    unread = [m for m in signals if m.offset >= positions[pipeline.dimension_of_topic[m.topic]]]
    for start in range(0, len(unread), 7):
        await pipeline.process_records(unread[start : start + 7])
        if start % 14 == 0:
            await pipeline.make_durable()  # as the feed's timer does, now and then
    await pipeline.make_durable()


def _abandon(pipeline: ScoringPipeline) -> None:
    _abandon_store(pipeline.store)


def _stored_positions(directory: Path) -> list[int] | None:
    store = StateStore(state_dir=directory, changelog_topic="-", producer=lambda: None)
    try:
        raw = store.db(0).get(SIGNAL_POSITIONS_KEY)
        return None if raw is None else orjson.loads(raw)
    finally:
        _abandon_store(store)


def _abandon_store(store: StateStore) -> None:
    store.databases.close()


def _outputs(producer: FakeProducer) -> list[tuple[bytes | None, bytes | None]]:
    return [(k, v) for k, v, _ in producer.on(NAMES.revocations)] + [
        (k, v) for k, v, _ in producer.on(NAMES.scores)
    ]


async def _reference(tmp_path: Path) -> tuple[dict[bytes, Any], list[Any]]:
    producer = Acks()
    pipeline = _pipeline(tmp_path / "reference", producer)
    await _run(pipeline, _signals())
    states = {key: state for key, state in pipeline.store.iter_agents(0)}
    _abandon(pipeline)
    return states, _outputs(producer)


async def _acks_of_a_whole_run(tmp_path: Path) -> int:
    producer = Acks()
    pipeline = _pipeline(tmp_path / "count", producer)
    await _run(pipeline, _signals())
    _abandon(pipeline)
    return producer.acks


def _essentials(states: dict[bytes, Any]) -> dict[bytes, tuple[Any, ...]]:
    """What a replay must reproduce exactly (the time and the weights of processing differ)."""
    return {key: (s.revoked, s.lifetime, s.applied_offsets, s.recent) for key, s in states.items()}


#: Kafka acknowledgements a whole run takes (checked below): a death is tried after each.
ACKS_OF_A_RUN = 8


async def test_the_deaths_below_cover_every_acknowledgement_of_a_run(tmp_path: Path) -> None:
    assert await _acks_of_a_whole_run(tmp_path) == ACKS_OF_A_RUN


@pytest.mark.parametrize("acks_before_death", range(ACKS_OF_A_RUN + 1))
async def test_a_death_after_any_acknowledgement_loses_nothing_and_repeats_only_bytes(
    tmp_path: Path, acks_before_death: int
) -> None:
    expected_states, expected_outputs = await _reference(tmp_path)
    assert [k for k, _ in expected_outputs] == [b"did:x:falling"]  # the scenario revokes once
    directory = tmp_path / "worker"
    dying = Acks(budget=acks_before_death)
    first = _pipeline(directory, dying)
    run = asyncio.ensure_future(_run(first, _signals()))
    # Run until everything is done or the pipeline waits on an acknowledgement that never comes.
    for _ in range(200):
        if run.done():
            break
        await asyncio.sleep(0.005)
    run.cancel()
    await asyncio.gather(run, return_exceptions=True)
    published_before = _outputs(dying)
    _abandon(first)

    # Stored progress covering the falling agent's signals means its revocation is stored.
    positions = _stored_positions(directory)
    if positions is not None and min(positions) > 0:
        assert published_before == expected_outputs

    # The replay runs a second later, under new weights: an output recomputed instead of
    # re-published as recorded would differ.
    survivor = Acks()
    second = _pipeline(directory, survivor, now_ms=NOW_MS + 1000, config=NEW_CONFIG)
    await _run(second, _signals())
    states = {key: state for key, state in second.store.iter_agents(0)}
    _abandon(second)
    assert _essentials(states) == _essentials(expected_states)
    published = published_before + _outputs(survivor)
    assert {k for k, _ in published} == {b"did:x:falling"}
    # Published at least once; more than once only as the very same bytes.
    assert len(set(published)) == 1, published


async def test_a_refused_output_holds_back_every_position_until_it_is_stored(
    tmp_path: Path,
) -> None:
    producer = Acks()
    producer.refusing[NAMES.revocations] = KafkaTimeoutError()
    pipeline = _pipeline(tmp_path, producer)
    run = asyncio.ensure_future(_run(pipeline, _signals()))
    await asyncio.sleep(0.3)
    assert not run.done()
    assert pipeline.delivery.retrying.health.blocked  # shown, and retried
    assert pipeline.store.db(0).get(SIGNAL_POSITIONS_KEY) is None
    producer.refusing.clear()
    await asyncio.wait_for(run, 10)
    assert orjson.loads(pipeline.store.db(0)[SIGNAL_POSITIONS_KEY])[:5] == [6] * 5
    revocations = producer.on(NAMES.revocations)
    assert [k for k, _, _ in revocations] == [b"did:x:falling"]
    # The state that records the revocation reached the changelog before the revocation.
    order = [(t, k) for t, k, _, _ in producer.stored if k == b"did:x:falling"]
    assert order.index((NAMES.agent_state, b"did:x:falling")) < order.index(
        (NAMES.revocations, b"did:x:falling")
    )
    _abandon(pipeline)


async def test_a_refused_changelog_batch_holds_back_the_outputs_it_records(
    tmp_path: Path,
) -> None:
    producer = Acks()
    producer.refusing[NAMES.agent_state] = KafkaTimeoutError()
    pipeline = _pipeline(tmp_path, producer)
    run = asyncio.ensure_future(_run(pipeline, _signals()))
    await asyncio.sleep(0.3)
    assert not run.done()
    assert producer.on(NAMES.revocations) == []  # nothing it records is stored yet
    assert pipeline.store.db(0).get(b"did:x:falling") is None
    producer.refusing.clear()
    await asyncio.wait_for(run, 10)
    assert [k for k, _, _ in producer.on(NAMES.revocations)] == [b"did:x:falling"]
    assert pipeline.store.db(0).get(b"did:x:falling") is not None
    _abandon(pipeline)


async def test_an_acknowledgement_that_never_comes_stalls_and_shows_blocked(
    tmp_path: Path,
) -> None:
    """A flush that times out: the producer never answers. Nothing moves, nothing fails."""
    producer = Acks(budget=0)
    pipeline = _pipeline(tmp_path, producer)
    run = asyncio.ensure_future(_run(pipeline, _signals()))
    await asyncio.sleep(0.3)
    assert not run.done() and pipeline.failed is None
    assert pipeline.store.db(0).get(SIGNAL_POSITIONS_KEY) is None
    for future in producer.held:
        future.set_result(Metadata(0))
    producer.budget = None
    await asyncio.wait_for(run, 15)
    assert orjson.loads(pipeline.store.db(0)[SIGNAL_POSITIONS_KEY])[:5] == [6] * 5
    _abandon(pipeline)


async def test_a_tick_waits_for_its_clock_without_holding_the_turn_signals_take(
    tmp_path: Path,
) -> None:
    """A tick's clock must be confirmed before Faust commits the tick, but the wait is Kafka's:
    signal batches (and critical signals) take their turns meanwhile."""
    producer = Acks(budget=0)  # nothing is acknowledged until the test says so
    pipeline = _pipeline(tmp_path, producer)
    tick = FakeEvent(FakeMessage(NAMES.ticks, 0, 0, None, encode_tick(NOW_MS), NOW_MS / 1000))
    ticking = asyncio.ensure_future(pipeline.process_batch([tick]))
    for _ in range(100):
        if producer.held:
            break
        await asyncio.sleep(0)
    assert producer.held, "the tick's clock was never sent"
    assert not ticking.done()

    body = {"agent_did": "did:x:steady", "value": 0.9, "source": "s"}
    signal = FakeMessage(NAMES.signals[0], 0, 0, b"did:x:steady", orjson.dumps(body), NOW_MS)
    await asyncio.wait_for(pipeline.process_records([signal]), 1)
    assert sum(pipeline.counters.signals_applied) == 1
    assert not ticking.done(), "the tick returned before its clock was confirmed"

    for future in producer.held:
        future.set_result(Metadata(0))
    await asyncio.wait_for(ticking, 5)
    assert pipeline.store.db(0).get(CLOCK_KEY) is not None
    _abandon(pipeline)
