"""Stream time is stored with the signal positions it was reached at
(streams/processing/progress.py) and taken from there when a partition is loaded
(streams/processing/closing.py: stored_clock)."""

from __future__ import annotations

from typing import Any

import orjson

from streams.kafka.records import Record
from streams.processing.closing import PartitionClock, stored_clock
from streams.processing.progress import SignalProgress
from streams.state.store import SIGNAL_POSITIONS_KEY

TOPICS = [f"signals.{d}" for d in range(5)]


class Store:
    """What SignalProgress uses of the state store: stored entries, and staged ones."""

    def __init__(self, stored: dict[int, list[int]] | None = None) -> None:
        self.stored = stored or {}
        self.staged: dict[tuple[int, bytes], bytes] = {}

    def signal_positions(self, partition: int) -> list[int] | None:
        return self.stored.get(partition)

    def stage_last(self, partition: int, key: bytes, value: bytes) -> None:
        self.staged[partition, key] = value


def record(topic: int, partition: int, offset: int) -> Record:
    return Record(TOPICS[topic], partition, offset, b"k", b"v", 0)


def progress(store: Any) -> SignalProgress:
    return SignalProgress(store, TOPICS)


def test_positions_move_past_the_records_and_are_staged_with_the_stream_time() -> None:
    store = Store()
    p = progress(store)
    moved = p.advance([record(0, 1, 4), record(0, 1, 5), record(3, 1, 0), record(2, 2, 9)])
    assert moved == {1, 2}
    assert p.positions(1) == [6, 0, 0, 1, 0]
    p.stage(1, 1_700_000_000_000)
    assert orjson.loads(store.staged[1, SIGNAL_POSITIONS_KEY]) == [6, 0, 0, 1, 0, 1_700_000_000_000]


def test_the_stream_time_stored_with_the_positions_is_the_one_taken() -> None:
    store = Store({0: [3, 3, 3, 3, 3, 1_700_000_050_000], 1: [1, 1, 1, 1, 1]})
    p = progress(store)
    assert p.positions(0) == [3, 3, 3, 3, 3]
    assert p.stored_stream_time(0) == 1_700_000_050_000
    assert p.stored_stream_time(1) is None  # stored by a release that kept it with the clock
    assert p.stored_stream_time(2) == 0  # nothing stored: nothing applied yet


def test_a_clock_record_written_ahead_of_the_positions_does_not_move_stream_time() -> None:
    # Ticks write the clock record before the positions; a crash between must not leave a stream
    # time that makes the signals read again late.
    ahead = PartitionClock(1_700_000_090_000, 41).encode()
    clock = stored_clock(0, ahead, 1_700_000_050_000, limit_ms=1_800_000_000_000)
    assert (clock.time_ms, clock.last_tick_offset) == (1_700_000_050_000, 41)
    assert stored_clock(0, ahead, 0, limit_ms=1_800_000_000_000).time_ms == 0
    # From an earlier release, positions alone: the clock record's time stands.
    assert stored_clock(0, ahead, None, limit_ms=1_800_000_000_000).time_ms == 1_700_000_090_000
    # Never ahead of the wall clock's limit.
    assert stored_clock(0, ahead, None, limit_ms=1_700_000_000_000).time_ms == 1_700_000_000_000
