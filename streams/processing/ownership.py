"""Which partitions this worker owns: one record, moved only by Faust's rebalance callbacks.

A partition is *assigned* when Faust's consumer group gives it to this worker, and *owned* once
its state is restored from the changelog and checked: only then are its records processed, its
agents expired and served. Revoked, it is neither, from the moment the revocation arrives (its
state is then made durable before it is released). Everything that depends on ownership (the
pipeline, the signal feed, the ticks, the sweep of idle agents, the HTTP API, the metrics) reads
it here instead of keeping a copy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


class Ownership:
    def __init__(self) -> None:
        #: Faust's assignment (partition numbers, the same on every co-partitioned topic).
        self.assigned: frozenset[int] = frozenset()
        #: Restored and processed.
        self.owned: frozenset[int] = frozenset()
        #: Set while no take-over is under way (Faust's records wait for it).
        self.settled = asyncio.Event()

    def assign(self, partitions: Iterable[int]) -> None:
        """Faust assigned exactly ``partitions`` (owned once taken over)."""
        self.assigned = frozenset(partitions)

    def take_over(self, partitions: Iterable[int]) -> None:
        """The state of ``partitions`` is restored: they are owned, and the rest no longer."""
        self.owned = frozenset(partitions)
        self.settled.set()

    def revoke(self, partitions: Iterable[int]) -> None:
        """``partitions`` are being taken away: not owned from now, and a take-over follows."""
        gone = frozenset(partitions)
        self.owned -= gone
        self.assigned -= gone
        self.settled.clear()

    @property
    def up_to_date(self) -> bool:
        """Every assigned partition is owned, and nothing else is."""
        return self.settled.is_set() and self.owned == self.assigned
