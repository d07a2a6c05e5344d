"""Where each partition's signal reading has got to, and the stream time it reached.

Both are stored in one record per partition (``SIGNAL_POSITIONS_KEY``: the next offset to read per
signal topic, then the stream time), written after the states they led to. They must move together:
a restart resumes reading at those positions with that stream time, so every record read again
meets the stream time it met the first time (a stream time stored ahead of its positions would make
replayed signals late, and their windows close without them).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from streams.state.store import SIGNAL_POSITIONS_KEY, StateStore


class SignalProgress:
    def __init__(self, store: StateStore, topics: Sequence[str]) -> None:
        self.store = store
        self.dimension_of_topic = {name: i for i, name in enumerate(topics)}
        self._count = len(topics)
        self._positions: dict[int, list[int]] = {}

    def positions(self, partition: int) -> list[int]:
        """Next offset to read per signal topic (dimension order) of ``partition``."""
        positions = self._positions.get(partition)
        if positions is None:
            stored = self.store.signal_positions(partition)
            positions = list(stored[: self._count]) if stored else [0] * self._count
            self._positions[partition] = positions
        return positions

    def stored_stream_time(self, partition: int) -> int | None:
        """The stream time stored with the positions: 0 when nothing is stored yet, None when
        an earlier release stored the positions alone (it kept the time with the partition
        clock)."""
        stored = self.store.signal_positions(partition)
        if stored is None:
            return 0
        return stored[self._count] if len(stored) > self._count else None

    def advance(self, records: Sequence[Any]) -> set[int]:
        """Move past ``records`` (each topic-partition's in offset order); the partitions moved."""
        last = {(record.topic, record.partition): record.offset for record in records}
        moved: set[int] = set()
        for (topic, partition), offset in last.items():
            self.positions(partition)[self.dimension_of_topic[topic]] = offset + 1
            moved.add(partition)
        return moved

    def stage(self, partition: int, stream_time_ms: int) -> None:
        """Stage the positions and stream time, to be written after every state staged so far."""
        record = [*self.positions(partition), stream_time_ms]
        self.store.stage_last(partition, SIGNAL_POSITIONS_KEY, orjson.dumps(record))

    def forget(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            self._positions.pop(partition, None)
