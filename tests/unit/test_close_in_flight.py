"""An agent closed again while the outputs of its previous close are still on their way.

A window closed by a tick is published after its closing turn, outside the turn, while signal
batches go on. The agent's stored state says what its last close published, and only that is
published again when its trigger is redelivered after a crash. So a later close of the same agent
(a critical signal closing its next window, here) must not reach the changelog before the first
close's outputs are confirmed: had it, a crash in between would leave a state that no longer
names the first window, and its update would never be published.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.kafka.topics import TopicNames
from streams.messages import iso_utc
from streams.processing.closing import encode_tick
from streams.processing.expiry import AgentExpiry
from streams.processing.pipeline import ScoringPipeline
from streams.scoring.model import DEFAULT_WEIGHTS, ScoringConfig
from streams.scoring.windows import WindowPolicy
from tests.support.fake_kafka import FakeEvent, FakeMessage, FakeProducer
from tests.support.unit_pipeline import unit_pipeline

NAMES = TopicNames("inflight.")
WINDOW_MS, GRACE_MS = 30_000, 5_000
NOW_MS = 1_795_000_020_000
#: A window start ten minutes before now: every signal below is long past, so none is held.
T0 = (NOW_MS - 600_000) // WINDOW_MS * WINDOW_MS
CONFIG = ScoringConfig.validated(DEFAULT_WEIGHTS, 450, 600)
AGENT = b"did:x:twice"


class Holding(FakeProducer):
    """Acknowledges every send except those to the ``held`` topics, left unanswered."""

    def __init__(self, held: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        super().__init__()
        self.held_topics = held
        self.held: list[asyncio.Future[Any]] = []

    def _future(
        self, topic: str, partition: int, rows: list[tuple[Any, Any]]
    ) -> asyncio.Future[Any]:
        if topic in self.held_topics:
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self.held.append(future)
            return future
        return super()._future(topic, partition, rows)


def _pipeline(directory: Path, producer: FakeProducer) -> ScoringPipeline:
    pipeline = unit_pipeline(
        directory,
        producer,
        names=NAMES,
        windows=WindowPolicy(size_ms=WINDOW_MS, grace_ms=GRACE_MS),
        config=CONFIG,
        now_ms=NOW_MS,
        # The feed has not caught up with one topic: the partition is not idle, so the tick
        # leaves stream time where the signals took it (and the merge does not wait for that
        # topic's records).
        merge_fetch_wait_ms=0,
    )
    pipeline.merge.caught_up = lambda dimension, _partition: dimension != 4
    return pipeline


def _signal(dimension: int, offset: int, did: bytes, value: float, at_ms: int) -> FakeMessage:
    body = {"agent_did": did.decode(), "value": value, "source": "s"}
    return FakeMessage(NAMES.signals[dimension], 0, offset, did, orjson.dumps(body), at_ms)


#: The agent's signals in its first two windows; another agent's takes stream time past the
#: first window's end plus grace, so that window is due at the next tick.
BEFORE_TICK = [
    _signal(0, 0, AGENT, 0.9, T0 + 1_000),
    _signal(0, 1, AGENT, 0.9, T0 + WINDOW_MS + 1_000),
    _signal(0, 2, b"did:x:other", 0.9, T0 + WINDOW_MS + GRACE_MS + 1_000),
]
#: A critical signal of the agent stamped past its second window's end plus grace: it closes
#: that window before it is judged.
CRITICAL = _signal(1, 0, AGENT, 0.0, T0 + 2 * WINDOW_MS + GRACE_MS + 1_000)
TICK = FakeEvent(FakeMessage(NAMES.ticks, 0, 0, None, encode_tick(NOW_MS), NOW_MS / 1000))


def _windows_published(*producers: FakeProducer) -> set[int]:
    starts = set()
    for producer in producers:
        for key, value, _ in producer.on(NAMES.scores):
            if key == AGENT:
                assert value is not None
                starts.add(orjson.loads(value)["window_start"])
    return starts


async def _until(condition: Any, what: str) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.002)
    raise AssertionError(f"never happened: {what}")


async def test_a_close_while_the_previous_closes_outputs_are_unconfirmed_loses_no_update(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "worker"
    dying = Holding(held={NAMES.scores})
    first = _pipeline(directory, dying)
    await first.process_records(BEFORE_TICK)
    ticking = asyncio.ensure_future(first.process_batch([TICK]))
    # The tick closed the agent's first window; that update is sent and not confirmed.
    await _until(lambda: dying.held, "the first window's update sent")
    critical = asyncio.ensure_future(first.process_records([CRITICAL]))
    # Whatever the critical signal's batch does meanwhile, the worker dies now.
    for _ in range(50):
        await asyncio.sleep(0.002)
    for task in (ticking, critical):
        task.cancel()
    await asyncio.gather(ticking, critical, return_exceptions=True)
    published_before = _windows_published(dying)
    first.store.databases.close()

    # A replacement replays from the positions stored (none: no checkpoint ran), the tick too.
    survivor = FakeProducer()
    second = _pipeline(directory, survivor)
    await second.process_records([*BEFORE_TICK, CRITICAL])
    await second.process_batch([TICK])
    await second.make_durable()
    published = _windows_published(dying, survivor)
    second.store.databases.close()

    assert len(published) == 2, (
        f"published {sorted(published)} (before the death: {sorted(published_before)})"
    )


async def test_an_agent_closed_twice_in_one_batch_has_both_closes_published_after_a_death(
    tmp_path: Path,
) -> None:
    """Two critical signals of one agent in one batch, each closing a window: the state stored
    with the batch must name both updates, since only the later signal's replay finds its close
    recorded."""
    opening = [
        _signal(0, 0, AGENT, 0.9, T0 + 1_000),
        _signal(0, 1, AGENT, 0.9, T0 + WINDOW_MS + 1_000),
    ]
    criticals = [
        _signal(1, 0, AGENT, 0.0, T0 + WINDOW_MS + GRACE_MS + 1_000),
        _signal(1, 1, AGENT, 0.0, T0 + 2 * WINDOW_MS + GRACE_MS + 1_000),
    ]
    directory = tmp_path / "worker"
    dying = Holding(held={NAMES.scores, NAMES.revocations})
    first = _pipeline(directory, dying)
    await first.process_records(opening)
    batch = asyncio.ensure_future(first.process_records(criticals))
    # The batch's states are in the changelog; its outputs are sent and never confirmed.
    await _until(lambda: dying.held, "the batch's outputs sent")
    assert [k for k, _, _ in dying.on(NAMES.agent_state)] == [AGENT]
    batch.cancel()
    await asyncio.gather(batch, return_exceptions=True)
    first.store.databases.close()

    survivor = FakeProducer()
    second = _pipeline(directory, survivor)
    await second.process_records([*opening, *criticals])
    assert second.counters.updates_republished == 2
    second.store.databases.close()
    assert _windows_published(survivor) == {iso_utc(T0), iso_utc(T0 + WINDOW_MS)}


#: The agent's only signal, in its first window; another's takes stream time past that window's
#: end plus grace.
ONE_WINDOW = [
    _signal(0, 0, AGENT, 0.9, T0 + 1_000),
    _signal(0, 1, b"did:x:other", 0.9, T0 + WINDOW_MS + GRACE_MS + 1_000),
]
#: The shortest TTL, and a clock past it: the agent, its window closed, is idle long enough.
TTL_SECONDS = 15.0
AFTER_TTL_MS = NOW_MS + int(TTL_SECONDS * 1000) + 1


async def _closed_with_update_held(directory: Path) -> tuple[Holding, ScoringPipeline, Any]:
    dying = Holding(held={NAMES.scores})
    first = _pipeline(directory, dying)
    await first.process_records(ONE_WINDOW)
    ticking = asyncio.ensure_future(first.process_batch([TICK]))
    await _until(lambda: dying.held, "the closed window's update sent")
    return dying, first, ticking


async def test_an_agent_whose_update_is_unconfirmed_is_not_expired(tmp_path: Path) -> None:
    """Its state, window closed and idle past the TTL, is stored: removed now, a crash would
    leave nothing naming the update on its way."""
    directory = tmp_path / "worker"
    dying, first, ticking = await _closed_with_update_held(directory)
    assert await AgentExpiry(first, TTL_SECONDS, wall_ms=lambda: AFTER_TTL_MS).sweep(0) == 0
    ticking.cancel()
    await asyncio.gather(ticking, return_exceptions=True)
    first.store.databases.close()

    survivor = FakeProducer()
    second = _pipeline(directory, survivor)
    await second.process_batch([TICK])  # taken over: the last tick's closes re-published
    assert await AgentExpiry(second, TTL_SECONDS, wall_ms=lambda: AFTER_TTL_MS).sweep(0) == 1
    second.store.databases.close()
    assert _windows_published(dying, survivor) == {iso_utc(T0)}


async def test_a_partition_taken_over_is_swept_only_after_its_closes_are_republished(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "worker"
    dying, first, ticking = await _closed_with_update_held(directory)
    ticking.cancel()
    await asyncio.gather(ticking, return_exceptions=True)
    first.store.databases.close()

    survivor = FakeProducer()
    second = _pipeline(directory, survivor)
    expiry = AgentExpiry(second, TTL_SECONDS, wall_ms=lambda: AFTER_TTL_MS)
    assert await expiry.sweep(0) == 0  # nothing of the partition processed yet
    await second.process_batch([TICK])
    assert await expiry.sweep(0) == 1
    second.store.databases.close()
    assert _windows_published(dying, survivor) == {iso_utc(T0)}


def _revocation_types(*producers: FakeProducer) -> list[str]:
    return [
        orjson.loads(value)["type"]
        for producer in producers
        for key, value, _ in producer.on(NAMES.revocations)
        if key == AGENT and value is not None
    ]


async def _dies_once_sent(
    directory: Path,
    run: Callable[[ScoringPipeline], Awaitable[None]],
    before: Callable[[ScoringPipeline], Awaitable[None]] | None = None,
) -> Holding:
    """A worker on ``directory`` runs ``before`` (its outputs confirmed), then ``run``, and dies
    once ``run``'s outputs are sent (never confirmed). Returns its producer."""
    dying = Holding()
    pipeline = _pipeline(directory, dying)
    if before is not None:
        await before(pipeline)
    dying.held_topics = {NAMES.scores, NAMES.revocations}
    task = asyncio.ensure_future(run(pipeline))
    await _until(lambda: dying.held, "outputs sent")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    pipeline.store.databases.close()
    return dying


async def test_a_signals_close_stays_published_when_a_tick_closes_the_agent_before_it_is_read(
    tmp_path: Path,
) -> None:
    """After a death, the critical signal's topic gives nothing for a while: the merge lets a
    later signal of another topic go ahead, stream time passes the agent's next window and a tick
    closes it, before the critical signal whose close was stored (and never confirmed) is read
    again. The tick's close must not hide it."""
    closing = _signal(1, 0, AGENT, 0.0, T0 + WINDOW_MS + GRACE_MS + 1_000)
    directory = tmp_path / "worker"
    dying = await _dies_once_sent(
        directory,
        lambda p: p.process_records([closing]),
        before=lambda p: p.process_records([ONE_WINDOW[0]]),
    )

    survivor = FakeProducer()
    second = _pipeline(directory, survivor)
    second.merge.caught_up = lambda dimension, _partition: dimension != 1  # its topic stalls
    later = _signal(0, 1, b"did:x:other", 0.9, T0 + 2 * WINDOW_MS + GRACE_MS + 1_000)
    await second.process_records([ONE_WINDOW[0], later])
    assert second.merge.forced > 0
    await second.process_batch([TICK])
    await second.process_records([closing])  # its topic delivers at last
    second.store.databases.close()
    assert _windows_published(dying, survivor) == {iso_utc(T0), iso_utc(T0 + WINDOW_MS)}


OPENING = [_signal(0, 0, AGENT, 0.9, T0 + 1_000)]
#: Two critical signals: the second revokes the agent.
REVOKING = [_signal(0, i, AGENT, 0.0, T0 + 2_000 + i) for i in (1, 2)]
REINSTATE = FakeEvent(
    FakeMessage(
        NAMES.commands,
        0,
        0,
        AGENT,
        orjson.dumps({"agent_did": AGENT.decode(), "requested_by": "ops", "reason": "checked"}),
        NOW_MS / 1000,
    )
)


async def _revoke(pipeline: ScoringPipeline) -> None:
    await pipeline.process_records(OPENING)
    await pipeline.process_records(REVOKING)


@pytest.mark.parametrize("deaths", [1, 2], ids=["reinstated", "reinstated-then-died"])
async def test_a_reinstatement_read_before_the_revoking_signal_follows_its_revocation(
    tmp_path: Path, deaths: int
) -> None:
    """Commands and signals are read by different consumers: after a death, a reinstate command
    can come before the signal whose revocation was stored and never confirmed is read again.
    The revocation must still be published, before the reinstatement that lifts it; and again
    if the worker dies once the reinstatement is stored, before its outputs are confirmed."""
    directory = tmp_path / "worker"
    await _dies_once_sent(directory, _revoke)
    if deaths == 2:
        await _dies_once_sent(directory, lambda p: p.process_batch([REINSTATE]))
    survivor = FakeProducer()
    pipeline = _pipeline(directory, survivor)
    await pipeline.process_batch([REINSTATE])
    await pipeline.process_records([*OPENING, *REVOKING])
    pipeline.store.databases.close()
    assert _revocation_types(survivor)[:2] == ["revoked", "reinstated"]


def _kinds(*producers: FakeProducer) -> list[tuple[str, str]]:
    """(type, revocation id or the id a reinstatement lifts) of the agent's revocation topic."""
    found = []
    for producer in producers:
        for key, value, _ in producer.on(NAMES.revocations):
            if key == AGENT and value is not None:
                body = orjson.loads(value)
                found.append(
                    (body["type"], body.get("revocation_id") or body["lifted_revocation_id"])
                )
    return found


#: Signals low enough (not critical) that closing the agent's window revokes it.
LOW_WINDOW = [
    *[_signal(d, 0, AGENT, 0.3, T0 + 1_000 + d) for d in range(5)],
    _signal(0, 1, b"did:x:other", 0.9, T0 + WINDOW_MS + GRACE_MS + 1_000),
]


async def _close_revoking(pipeline: ScoringPipeline) -> None:
    await pipeline.process_records(LOW_WINDOW)
    await pipeline.process_batch([TICK])


async def test_a_closes_revocation_is_published_before_a_reinstatement_across_two_deaths(
    tmp_path: Path,
) -> None:
    """A tick's close revokes the agent and the worker dies unconfirmed; the next one reads the
    reinstate command first, and dies too: the third publishes the revocation, then the
    reinstatement, though the agent is no longer revoked."""
    directory = tmp_path / "worker"
    await _dies_once_sent(directory, _close_revoking)
    await _dies_once_sent(directory, lambda p: p.process_batch([REINSTATE]))
    survivor = FakeProducer()
    pipeline = _pipeline(directory, survivor)
    await pipeline.process_batch([REINSTATE, TICK])
    await pipeline.process_records(LOW_WINDOW)
    pipeline.store.databases.close()
    kinds = _kinds(survivor)
    assert [kind for kind, _ in kinds] == ["revoked", "reinstated"], kinds
    assert kinds[0][1] == kinds[1][1]  # the reinstatement lifts that revocation


async def test_a_reinstatement_read_again_after_a_newer_revocation_is_not_published_again(
    tmp_path: Path,
) -> None:
    """Revoked, reinstated (confirmed), revoked again (stored, never confirmed): the worker dies
    before the command's offset is committed. Read again, the command must not publish the old
    reinstatement after the new revocation, as if the agent were reinstated."""
    directory = tmp_path / "worker"

    async def revoked_and_reinstated(pipeline: ScoringPipeline) -> None:
        await _revoke(pipeline)
        await pipeline.process_batch([REINSTATE])

    again = [_signal(0, i, AGENT, 0.0, T0 + 3_000 + i) for i in range(3, 8)]
    first_out = await _dies_once_sent(
        directory, lambda p: p.process_records(again), before=revoked_and_reinstated
    )

    survivor = FakeProducer()
    second = _pipeline(directory, survivor)
    await second.process_batch([REINSTATE])
    await second.process_records([*OPENING, *REVOKING, *again])
    second.store.databases.close()
    before, after = _kinds(first_out), _kinds(survivor)
    assert [kind for kind, _ in before] == ["revoked", "reinstated"]
    assert [kind for kind, _ in after] == ["revoked"] and after[0] != before[0], after


async def test_a_partition_handed_over_cleanly_does_not_publish_its_last_ticks_closes_again(
    tmp_path: Path,
) -> None:
    first_out = FakeProducer()
    first = _pipeline(tmp_path / "worker", first_out)
    await first.process_records(ONE_WINDOW)
    await first.process_batch([TICK])
    await first.make_durable()  # as before a partition is given up
    first.store.databases.close()
    second_out = FakeProducer()
    second = _pipeline(tmp_path / "worker", second_out)
    next_tick = FakeMessage(NAMES.ticks, 0, 1, None, encode_tick(NOW_MS), NOW_MS / 1000)
    await second.process_batch([FakeEvent(next_tick)])
    second.store.databases.close()
    assert _windows_published(first_out) == {iso_utc(T0)}
    assert _windows_published(second_out) == set()


async def test_a_reinstatement_never_confirmed_goes_out_before_a_newer_revocation(
    tmp_path: Path,
) -> None:
    """Reinstated (stored, never confirmed), the worker dies; the next one revokes the agent
    anew before it reads the command again (which then publishes nothing: the agent is revoked).
    The reinstatement must go out, before the new revocation."""
    directory = tmp_path / "worker"
    await _dies_once_sent(directory, lambda p: p.process_batch([REINSTATE]), before=_revoke)

    survivor = FakeProducer()
    second = _pipeline(directory, survivor)
    again = [_signal(0, i, AGENT, 0.0, T0 + 3_000 + i) for i in range(3, 8)]
    await second.process_records([*OPENING, *REVOKING, *again])
    await second.process_batch([REINSTATE])
    second.store.databases.close()
    kinds = [kind for kind, _ in _kinds(survivor)]
    assert kinds[kinds.index("reinstated") :] == ["reinstated", "revoked"], kinds


async def test_a_checkpoint_under_way_never_stores_its_clock_over_a_newer_ticks(
    tmp_path: Path,
) -> None:
    """A checkpoint takes the partition clock staged when it begins and writes it after its
    states. A tick applied meanwhile stores its own clock, naming itself the last tick (whose
    closes a take-over re-publishes), before it closes windows. Were the checkpoint's older
    clock stored after that one, a worker dying before those closes' updates are confirmed
    would leave a clock saying the last tick's closes were all confirmed, and the updates would
    never be published."""
    directory = tmp_path / "worker"
    dying = Holding(held={NAMES.scores})
    first = _pipeline(directory, dying)
    await first.process_batch([TICK])  # nothing due yet: its clock is staged for the next write
    await first.process_records(ONE_WINDOW)
    gate, waiting = asyncio.Event(), asyncio.Event()

    async def held_between_slices() -> None:
        waiting.set()
        await gate.wait()

    first.store.changelog_room = held_between_slices  # type: ignore[method-assign]
    checkpoint = asyncio.ensure_future(first.make_durable())
    await _until(waiting.is_set, "the checkpoint's states sent")
    next_tick = FakeEvent(FakeMessage(NAMES.ticks, 0, 1, None, encode_tick(NOW_MS), NOW_MS / 1000))
    ticking = asyncio.ensure_future(first.process_batch([next_tick]))
    await _until(lambda: dying.held, "the closed window's update sent")
    gate.set()
    await asyncio.wait_for(checkpoint, 5)
    # The worker dies, the update unconfirmed and the tick uncommitted.
    ticking.cancel()
    await asyncio.gather(ticking, return_exceptions=True)
    first.store.databases.close()

    survivor = FakeProducer()
    second = _pipeline(directory, survivor)
    await second.process_batch([next_tick])  # redelivered
    second.store.databases.close()
    assert _windows_published(dying, survivor) == {iso_utc(T0)}
