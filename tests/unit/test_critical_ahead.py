"""Critical signals taken ahead of their turn (streams/processing/ahead.py): exactly the records
the merge would release before them, with the stream time they would see there."""

from __future__ import annotations

import random

import pytest

from streams.processing.ahead import APPLIED_AHEAD, Ahead
from streams.processing.intake import AcceptedSignal, Rejection
from streams.processing.merge import Arrived, SignalMerge

NOW = 1_700_000_000_000
OLD = NOW - 600_000  # a backlog: long past any wait
AGENTS = [b"did:mesh:a", b"did:mesh:b", b"did:mesh:c"]


def record(
    dimension: int,
    offset: int,
    at_ms: int,
    agent: bytes = AGENTS[0],
    *,
    value: float = 0.6,
    rejected: bool = False,
    partition: int = 0,
) -> Arrived:
    signal: AcceptedSignal | Rejection = (
        Rejection("invalid_json", "no")
        if rejected
        else AcceptedSignal(agent.decode(), value, at_ms, None, "test")
    )
    return Arrived(
        f"signals.{dimension}",
        partition,
        offset,
        agent,
        b"{}",
        at_ms,
        signal,
        -1 if rejected else at_ms,
        dimension,
        NOW,
    )


def merge(caught_up: bool = True, wait_ms: int = 0) -> SignalMerge:
    return SignalMerge(5, wait_ms=wait_ms, fetch_wait_ms=1_000, caught_up=lambda _d, _p: caught_up)


def random_queues(rng: random.Random) -> list[Arrived]:
    records = []
    for dimension in range(5):
        at = OLD
        for offset in range(rng.randrange(0, 40)):
            # Mostly in time order, now and then out of it (several producers, own clocks).
            at += rng.randrange(0, 50) if rng.random() < 0.9 else -rng.randrange(0, 300)
            critical = rng.random() < 0.08
            records.append(
                record(
                    dimension,
                    offset,
                    at,
                    rng.choice(AGENTS),
                    value=0.1 if critical else 0.6,
                    rejected=rng.random() < 0.03,
                )
            )
    return records


def expected_ahead(released: list[Arrived], critical: Arrived) -> list[tuple[int, int, int]]:
    """From the merge's own order: the agent's valid records up to the critical one, each with
    the latest time released before it."""
    out = []
    floor = -1
    for r in released:
        if r.key == critical.key and type(r.signal) is AcceptedSignal:
            out.append((r.dimension, r.offset, floor))
        if (r.dimension, r.offset) == (critical.dimension, critical.offset):
            return out
        floor = max(floor, r.event_ms)
    raise AssertionError("critical not released")


def as_tuples(ahead: list[Ahead]) -> list[tuple[int, int, int]]:
    return [(a.record.dimension, a.record.offset, a.stream_floor_ms) for a in ahead]


def floors(released: list[Arrived]) -> dict[tuple[int, int], int]:
    """The latest time released before each record, by (dimension, offset)."""
    floor_of = {}
    floor = -1
    for r in released:
        floor_of[r.dimension, r.offset] = floor
        floor = max(floor, r.event_ms)
    return floor_of


def stream_time_seen(floor_ms: int, event_ms: int) -> int | None:
    """What apply_signal can tell of the stream time before a signal: only a time later than
    the signal's own (up to it, every value gives the same result)."""
    return floor_ms if floor_ms > event_ms else None


@pytest.mark.parametrize("seed", range(300))
def test_taken_ahead_are_exactly_what_the_merge_releases_before_and_their_turn_stays(
    seed: int,
) -> None:
    rng = random.Random(seed)
    records = random_queues(rng)
    reference = merge()
    reference.add(records)
    released = reference.release(NOW)
    m = merge()
    m.add(records)
    ahead = m.take_ahead(NOW, max_steps=1_000_000)
    # Every critical signal was taken (all fetched, all caught up), each after the records of
    # its agent that go before it, with the stream time each would see in its turn.
    criticals = [r for r in released if type(r.signal) is AcceptedSignal and r.signal.value < 0.3]
    expected = []
    done: set[tuple[int, int]] = set()
    for critical in criticals:
        for item in expected_ahead(released, critical):
            if item[:2] not in done:
                done.add(item[:2])
                expected.append(item)
    event = {(r.dimension, r.offset): r.event_ms for r in released}
    assert sorted(
        (d, o, stream_time_seen(f, event[d, o])) for d, o, f in as_tuples(ahead)
    ) == sorted((d, o, stream_time_seen(f, event[d, o])) for d, o, f in expected)
    # Per agent, in merged order.
    position = {(r.dimension, r.offset): i for i, r in enumerate(released)}
    for agent in AGENTS:
        mine = [
            position[a.record.dimension, a.record.offset] for a in ahead if a.record.key == agent
        ]
        assert mine == sorted(mine)
    # The merge still releases every record in the same order: those taken marked as applied.
    after = m.release(NOW)
    assert [(r.dimension, r.offset) for r in after] == [(r.dimension, r.offset) for r in released]
    assert {(r.dimension, r.offset) for r in after if r.signal is APPLIED_AHEAD} == done


def test_a_critical_signal_waits_while_a_topic_not_caught_up_may_hold_earlier_records() -> None:
    m = merge(caught_up=False)
    m.add([record(0, 0, OLD + 10), record(2, 0, OLD + 20, value=0.0)])
    assert m.take_ahead(NOW) == []
    # Once every other topic has shown a later record, its turn is known.
    m.add([record(d, 0, OLD + 30, AGENTS[1]) for d in (1, 3, 4)])
    m.add([record(0, 1, OLD + 30, AGENTS[1])])
    assert [(a.record.dimension, a.record.offset) for a in m.take_ahead(NOW)] == [(0, 0), (2, 0)]


def test_a_caught_up_empty_topic_holds_a_live_critical_signal_for_the_merge_wait() -> None:
    m = merge(caught_up=True, wait_ms=100)
    m.add([record(2, 0, NOW - 50, value=0.0)])
    assert m.take_ahead(NOW) == []
    m.add([record(1, 0, NOW - 40, AGENTS[1])])  # records come in: it is looked at again
    assert [(a.record.dimension, a.record.offset) for a in m.take_ahead(NOW + 60)] == [(2, 0)]


def test_a_critical_signal_released_in_its_turn_is_not_taken_again() -> None:
    m = merge()
    m.add([record(2, 0, OLD, value=0.0)] + [record(d, 0, OLD + 5, AGENTS[1]) for d in (0, 1, 3, 4)])
    assert len(m.release(NOW, limit=1)) == 1
    m.add([record(0, 1, OLD + 9, AGENTS[1])])
    assert m.take_ahead(NOW) == []


def test_looking_for_a_turn_is_bounded_and_a_deep_critical_signal_takes_its_turn() -> None:
    m = merge()
    m.add([record(0, i, OLD + i, AGENTS[1]) for i in range(5_000)])
    m.add([record(1, 0, OLD + 4_000, value=0.0)] + [record(d, 0, OLD + 9_999) for d in (2, 3, 4)])
    assert m.take_ahead(NOW, max_steps=1_000) == []  # 5,004 records queued
    m.add([record(0, 5_000, OLD + 9_999, AGENTS[1])])
    assert len(m.take_ahead(NOW, max_steps=10_000)) == 1


def test_the_fields_read_by_position_are_where_they_are_read() -> None:
    from streams.processing import ahead

    probe = record(3, 17, OLD + 5)
    assert (ahead._OFFSET(probe), ahead._KEY(probe), ahead._EVENT(probe)) == (
        probe.offset,
        probe.key,
        probe.event_ms,
    )


def test_a_critical_signal_stamped_ahead_of_the_worker_clock_is_not_held_for_its_time() -> None:
    """A producer whose clock runs ahead: with no merge wait the merge releases such a signal
    at once, and so is it taken ahead at once, not when the worker's clock reaches its time."""
    m = merge(caught_up=True, wait_ms=0)
    m.add([record(2, 0, NOW + 500, value=0.0)])
    assert [(a.record.dimension, a.record.offset) for a in m.take_ahead(NOW)] == [(2, 0)]


def test_a_blocked_critical_signal_is_looked_at_again_only_for_records_that_may_unblock_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In a backlog a critical signal stays blocked while thousands of records come in that go
    before it: working its turn out again for each batch cost as much as the backlog."""
    from streams.processing import merge as merge_module

    looked_at = []
    real = merge_module.take_before

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        looked_at.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(merge_module, "take_before", counting)
    m = merge(caught_up=False)
    m.add([record(2, 0, OLD + 500, value=0.0)] + [record(d, 0, OLD + 600) for d in (1, 3, 4)])
    m.add([record(0, 0, OLD, AGENTS[1])])
    assert m.take_ahead(NOW) == [] and len(looked_at) == 1  # topic 0 may hold earlier records
    for offset in range(1, 200):  # they come, all before it, batch after batch
        m.add([record(0, offset, OLD + offset, AGENTS[1])])
        assert m.take_ahead(NOW) == []
    assert len(looked_at) == 1
    m.add([record(0, 200, OLD + 700, AGENTS[1])])  # one after it: its turn is known now
    assert [(a.record.dimension, a.record.offset) for a in m.take_ahead(NOW)] == [(2, 0)]
    assert len(looked_at) == 2


def test_a_signal_blocked_by_a_topic_not_caught_up_goes_once_that_topic_catches_up() -> None:
    caught_up = {d: True for d in range(5)}
    caught_up[0] = False
    m = SignalMerge(5, wait_ms=0, fetch_wait_ms=1_000, caught_up=lambda d, _p: caught_up[d])
    m.add([record(2, 0, OLD + 500, value=0.0)] + [record(d, 0, OLD + 600) for d in (1, 3, 4)])
    assert m.take_ahead(NOW) == []
    caught_up[0] = True
    m.add([record(1, 1, OLD + 700, AGENTS[1])])
    assert [(a.record.dimension, a.record.offset) for a in m.take_ahead(NOW)] == [(2, 0)]


@pytest.mark.parametrize("seed", range(200))
def test_signals_taken_as_records_come_in_are_what_the_merge_releases_before_them(
    seed: int,
) -> None:
    """Records come in batch after batch on topics not caught up until the last: whatever is
    taken ahead meanwhile, blocked or not, is in the merge's own order, and every critical
    signal is taken or released in its turn."""
    rng = random.Random(seed)
    records = random_queues(rng)
    reference = merge()
    reference.add(records)
    released = reference.release(NOW)
    position = {(r.dimension, r.offset): i for i, r in enumerate(released)}
    caught_up = {"all": False}
    m = SignalMerge(5, wait_ms=0, fetch_wait_ms=1_000, caught_up=lambda _d, _p: caught_up["all"])
    pending = {d: [r for r in records if r.dimension == d] for d in range(5)}
    taken: list[Ahead] = []
    while any(pending.values()):
        d = rng.choice([d for d, left in pending.items() if left])
        count = rng.randrange(1, 6)
        m.add(pending[d][:count])
        del pending[d][:count]
        taken.extend(m.take_ahead(NOW))
    caught_up["all"] = True
    m.add([])  # nothing new: what is blocked waits for its turn, as it may
    taken.extend(m.take_ahead(NOW))
    # Per agent: its valid records in merged order up to its last critical signal taken, no
    # more and no fewer, each with the stream time it would see in its turn.
    floor_of = floors(released)
    for agent in AGENTS:
        mine = [a for a in taken if a.record.key == agent]
        at = [position[a.record.dimension, a.record.offset] for a in mine]
        assert at == sorted(at)
        valid = [
            i
            for i, r in enumerate(released)
            if r.key == agent and type(r.signal) is AcceptedSignal and bool(at) and i <= at[-1]
        ]
        assert at == valid
        assert not mine or mine[-1].record.signal.value < 0.3  # type: ignore[union-attr]
        for a in mine:
            key = (a.record.dimension, a.record.offset)
            assert stream_time_seen(a.stream_floor_ms, a.record.event_ms) == stream_time_seen(
                floor_of[key], a.record.event_ms
            )
    after = m.release(NOW)
    assert [(r.dimension, r.offset) for r in after] == [(r.dimension, r.offset) for r in released]
    assert {(r.dimension, r.offset) for r in after if r.signal is APPLIED_AHEAD} == {
        (a.record.dimension, a.record.offset) for a in taken
    }


@pytest.mark.parametrize("seed", range(300))
def test_signals_taken_between_releases_are_what_the_merge_releases_before_them(
    seed: int,
) -> None:
    """Records come in and part of them go, over and over, out of time order now and then:
    a record's rank is then the latest time among its queue's records still there, and may be
    lower than that of one already gone. What is taken ahead meanwhile still follows the
    merge's own order, which taking changes in nothing."""
    rng = random.Random(seed)
    records = random_queues(rng)
    caught_up = {"all": False}
    m = SignalMerge(5, wait_ms=0, fetch_wait_ms=1_000, caught_up=lambda _d, _p: caught_up["all"])
    reference = SignalMerge(
        5, wait_ms=0, fetch_wait_ms=1_000, caught_up=lambda _d, _p: caught_up["all"]
    )
    pending = {d: [r for r in records if r.dimension == d] for d in range(5)}
    released: list[Arrived] = []
    expected: list[Arrived] = []
    #: (dimension, offset) -> the step it was applied at: taken ahead, or released in its turn.
    applied_at: dict[tuple[int, int], int] = {}
    taken: list[Ahead] = []
    #: Stream time when each was taken: the handlers apply it with the later of that and its floor.
    stream_then: list[int] = []
    stream = [-1]

    # The clock moves on: a topic-partition that gives nothing for the fetch wait is gone
    # ahead of, and its records may then come in stamped earlier than one already released.
    now = NOW

    def release(step: int, limit: int | None) -> None:
        out = m.release(now, limit)
        stream[0] = max([stream[0], *(r.event_ms for r in out)])
        for r in out:
            if r.signal is not APPLIED_AHEAD:
                applied_at[r.dimension, r.offset] = step
        released.extend(out)
        expected.extend(reference.release(now, limit))

    step = 0
    while any(pending.values()):
        step += 1
        now += rng.randrange(0, 400)
        d = rng.choice([d for d, left in pending.items() if left])
        count = rng.randrange(1, 6)
        m.add(pending[d][:count])
        reference.add(pending[d][:count])
        del pending[d][:count]
        if rng.random() < 0.4:
            release(step, rng.randrange(1, 8))
        for a in m.take_ahead(now):
            applied_at[a.record.dimension, a.record.offset] = step
            taken.append(a)
            stream_then.append(stream[0])
    caught_up["all"] = True
    release(step + 1, None)
    as_keys = [(r.dimension, r.offset) for r in released]
    assert as_keys == [(r.dimension, r.offset) for r in expected]
    assert {k for k, r in zip(as_keys, released, strict=True) if r.signal is APPLIED_AHEAD} == {
        (a.record.dimension, a.record.offset) for a in taken
    }
    floor_of = floors(released)
    # Each agent's valid records are applied in merged order, taken ahead or in their turn.
    for agent in AGENTS:
        steps = [
            applied_at[r.dimension, r.offset]
            for r in expected
            if r.key == agent and type(r.signal) is AcceptedSignal
        ]
        assert steps == sorted(steps)
    for a, then in zip(taken, stream_then, strict=True):
        seen = stream_time_seen(max(a.stream_floor_ms, then), a.record.event_ms)
        assert seen == stream_time_seen(
            floor_of[a.record.dimension, a.record.offset], a.record.event_ms
        )


def test_a_blocked_signal_released_in_its_turn_is_no_longer_kept() -> None:
    m = merge(caught_up=False)
    m.add([record(2, 0, OLD + 500, value=0.0)] + [record(d, 0, OLD + 600) for d in (1, 3, 4)])
    m.add([record(0, 0, OLD, AGENTS[1])])
    assert m.take_ahead(NOW) == []  # blocked: topic 0 may hold earlier records
    assert [(r.dimension, r.offset) for r in m.release(NOW)] == [(0, 0)]
    # Topic 0 gives nothing for the fetch wait: the signal goes in its turn, still blocked.
    assert (2, 0) in [(r.dimension, r.offset) for r in m.release(NOW + 2_000)]
    m.add([record(1, 1, OLD + 900, AGENTS[1])])
    assert m.take_ahead(NOW + 2_000) == []
    assert not m._critical  # nothing left waiting for a signal already applied
