"""Garbage collection on the worker's schedule, in pauses a revocation can afford to wait for.

Why. CPython starts a young collection when its tracked objects made minus those freed pass 700.
A worker in its steady state frees about as many as it makes (each signal replaces the oldest of
its agent's recent values and explanations), so that count hardly moves while the young generation
fills with everything made since: 100,000 to 300,000 objects, collected every 5 to 30 s in one
pause of 100 to 220 ms (measured at 22,600 signals/s), which every signal in flight waits for, a
revocation among them. A full collection walks every object the worker holds, every agent state
among them: 0.25 to 0.36 s with 10,000 agents, 1.3 s with 100,000 (synthetic full states).

What this does instead:

- every :data:`YOUNG_INTERVAL_S`, the young generation is collected, whatever the count says
  (2.4 ms on average at that load, 21 ms at most), and what survives is frozen (``gc.freeze``):
  no collection walks it again. Dropped, a frozen object is freed by reference counting alone,
  as agent states are, which hold no reference cycles;
- a cycle that became garbage only after it was frozen stays until a full collection over
  everything frozen. One runs as the worker starts, and later when the memory Python holds has
  doubled since the last one, at most every :data:`FULL_MIN_INTERVAL_S`: held state that grew,
  or cycles kept that way, are then worth the pause. Each is logged, with what it freed.

CPython's own trigger stays on: bursts that only allocate (a restore, a backlog's first batches)
are collected by it as before, and find the young generation small.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger(__name__)

#: Seconds between young collections. Measured at 22,600 signals/s: 2.4 ms on average, 21 ms at
#: most. While a tuple per signal was kept (see streams.scoring.explained): 15 ms and 36 ms, and
#: every 0.1 s instead, 6.6 ms on average and twice the time in all.
YOUNG_INTERVAL_S = 0.5
#: Young collections between two looks at the memory held (each look costs about a millisecond).
GROWTH_CHECK_EVERY = 10
#: Growth of the memory held since the last full collection that calls for the next one...
FULL_GROWTH = 1.0
#: ...but not sooner than this after it.
FULL_MIN_INTERVAL_S = 600.0

KINDS = ("young", "full")


class GcModule(Protocol):
    """The part of the :mod:`gc` module the pacing drives (a fake in unit tests)."""

    def collect(self, generation: int = 2) -> int: ...

    def freeze(self) -> None: ...

    def unfreeze(self) -> None: ...

    def get_freeze_count(self) -> int: ...


def allocated_blocks() -> int:
    """Memory blocks Python holds for objects (about a millisecond for ten million)."""
    return sys.getallocatedblocks()


@dataclass
class GcStats:
    """What the paced collections did, for the metrics: by kind, how many and the seconds."""

    collections: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(KINDS, 0.0))
    longest: dict[str, float] = field(default_factory=lambda: dict.fromkeys(KINDS, 0.0))
    #: Objects frozen after the last full collection, and what it found unreachable.
    frozen: int = 0
    freed: int = 0
    #: Memory blocks held at the last look.
    blocks: int = 0


class PacedCollection:
    """Runs the collections described above; :meth:`step` is one young interval's work."""

    def __init__(
        self,
        collector: GcModule = gc,
        clock: Callable[[], float] = time.perf_counter,
        blocks: Callable[[], int] = allocated_blocks,
    ) -> None:
        self._gc = collector
        self._clock = clock
        self._blocks = blocks
        self._steps = 0
        #: Memory blocks held after the last full collection (None: none yet), and when.
        self._blocks_after_full: int | None = None
        self._full_at = 0.0
        self.stats = GcStats()

    def step(self) -> None:
        self._timed("young", self._collect_young)
        self._steps += 1
        if self._steps % GROWTH_CHECK_EVERY == 1:
            self.stats.blocks = blocks = self._blocks()
            if self._full_due(blocks):
                self._collect_all()

    def _collect_young(self) -> None:
        self._gc.collect(0)
        self._gc.freeze()

    def _full_due(self, blocks: int) -> bool:
        if self._blocks_after_full is None:
            return True
        return (
            blocks > self._blocks_after_full * (1 + FULL_GROWTH)
            and self._clock() - self._full_at >= FULL_MIN_INTERVAL_S
        )

    def _collect_all(self) -> None:
        stats = self.stats
        before = stats.blocks

        def everything() -> None:
            self._gc.unfreeze()
            stats.freed = self._gc.collect(2)
            self._gc.freeze()
            stats.frozen = self._gc.get_freeze_count()  # walks them all: part of the pause

        seconds = self._timed("full", everything)
        self._full_at = self._clock()
        self._blocks_after_full = stats.blocks = self._blocks()
        log.info(
            "Full garbage collection: %d unreachable objects freed, %d held; memory blocks "
            "%d before, %d after; %.0f ms",
            stats.freed,
            stats.frozen,
            before,
            stats.blocks,
            seconds * 1000,
        )

    def _timed(self, kind: str, work: Callable[[], object]) -> float:
        started = self._clock()
        work()
        seconds = self._clock() - started
        stats = self.stats
        stats.collections[kind] += 1
        stats.seconds[kind] += seconds
        stats.longest[kind] = max(stats.longest[kind], seconds)
        return seconds

    async def run(self) -> None:
        """Collect on schedule until cancelled (the worker's lifetime)."""
        while True:
            await asyncio.sleep(YOUNG_INTERVAL_S)
            self.step()
