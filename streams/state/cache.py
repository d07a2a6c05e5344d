"""Decoded agent states kept between batches, bounded by count and by estimated memory.

Decoding is the largest cost of reading a state, so the states of recently active agents are
kept decoded. Entries are the very objects last written, so they never go stale while the
partition stays assigned; a partition's entries are dropped when it moves. Bounded by memory as
well as count: a state grows with its agent's history (1.5 KiB new, 34 KiB full), so a count alone
would let the cache grow thirtyfold as states fill.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from streams.scoring.agent import AgentState

Entry = tuple[int, bytes]  # (partition, key)


def held_bytes(state: AgentState) -> int:
    """About how much memory a decoded state takes, with what the codec keeps of its last
    encoding. Measured with tracemalloc: 1.5 KiB, plus 38 bytes per recent value, 124 per
    history entry, 200 per explained signal and 300 per open window (34 KiB for a full state)."""
    return (
        1500
        + 38 * sum(map(len, state.recent))
        + 124 * len(state.history)
        + 200 * len(state.recent_signals)
        + 300 * len(state.open_windows)
    )


class StateCache:
    def __init__(self, max_agents: int, max_bytes: int) -> None:
        self.max_agents = max_agents
        self.max_bytes = max_bytes
        self._states: OrderedDict[Entry, AgentState] = OrderedDict()
        self._sizes: dict[Entry, int] = {}
        #: Estimated memory of the states held now.
        self.bytes = 0

    def get(self, entry: Entry) -> AgentState | None:
        state = self._states.get(entry)
        if state is not None:
            self._states.move_to_end(entry)
        return state

    def put(self, entry: Entry, state: AgentState) -> None:
        """Hold ``state`` as the most recent; charged again at its current size, since a state
        grows in place."""
        states = self._states
        sizes = self._sizes
        states[entry] = state
        states.move_to_end(entry)
        size = held_bytes(state)
        self.bytes += size - sizes.get(entry, 0)
        sizes[entry] = size
        while len(states) > self.max_agents or self.bytes > self.max_bytes:
            evicted, _ = states.popitem(last=False)
            self.bytes -= sizes.pop(evicted)

    def drop(self, entry: Entry) -> None:
        if self._states.pop(entry, None) is not None:
            self.bytes -= self._sizes.pop(entry)

    def drop_partitions(self, partitions: Iterable[int] | None) -> None:
        """Drop the states of ``partitions`` (all when None)."""
        if partitions is None:
            self._states.clear()
            self._sizes.clear()
            self.bytes = 0
            return
        gone = set(partitions)
        for entry in [entry for entry in self._states if entry[0] in gone]:
            self.drop(entry)
