"""Per-partition access to the agent-state table, one read and one write per agent per batch.

Faust routes a table read or write to the RocksDB of the *current event's* partition and writes
the changelog record to that partition. A batch holds events of several partitions, so before
touching the table for partition ``p`` we make an event of ``p`` the current one
(:func:`bind_partition`). Keys are raw DID bytes, the same bytes producers partition by.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Any

from faust.streams import _current_event

from .scoring.agent import AgentState
from .scoring.codec import decode_state, encode_state

#: Table keys that are not agents start with a NUL byte, which no DID can contain.
RESERVED_PREFIX = b"\x00"
CLOCK_KEY = b"\x00partition-clock"


def bind_partition(event: Any) -> None:
    """Make ``event`` the current event, so table I/O goes to its partition."""
    _current_event.set(weakref.ref(event))


class PartitionStates:
    """Agent states of one partition, cached for the length of one batch."""

    __slots__ = ("_dirty", "_loaded", "partition", "table")

    def __init__(self, table: Any, partition: int) -> None:
        self.table = table
        self.partition = partition
        self._loaded: dict[bytes, AgentState | None] = {}
        self._dirty: set[bytes] = set()

    def get(self, key: bytes) -> AgentState | None:
        try:
            return self._loaded[key]
        except KeyError:
            raw = self.table.get(key)
            state = None if raw is None else decode_state(raw)
            self._loaded[key] = state
            return state

    def get_or_new(self, key: bytes) -> AgentState:
        state = self.get(key)
        if state is None:
            state = AgentState()
            self._loaded[key] = state
        return state

    def mark_dirty(self, key: bytes) -> None:
        self._dirty.add(key)

    def write_dirty(self) -> int:
        """Write every changed state once (store + changelog). Needs the partition bound."""
        table = self.table
        loaded = self._loaded
        for key in self._dirty:
            state = loaded[key]
            assert state is not None
            table[key] = encode_state(state)
        written = len(self._dirty)
        self._dirty.clear()
        return written


def iter_partition_agents(table: Any, partition: int) -> Iterator[tuple[bytes, AgentState]]:
    """Every agent state stored locally for ``partition`` (after recovery, that is all of them)."""
    store = table.data
    db = store._db_for_partition(partition)
    offset_key = store.offset_key
    for key, value in db.items():
        if key == offset_key or key.startswith(RESERVED_PREFIX):
            continue
        yield key, decode_state(value)
