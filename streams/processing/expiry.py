"""Removing idle agents (opt-in: ``TRUST_AGENT_TTL_DAYS``).

An agent no signal has been applied to for longer than the TTL, by this worker's wall clock, is
deleted locally and tombstoned on the changelog (so no restore brings it back), and dropped from
the state cache and the window schedule. If it sends a signal again it starts afresh, as a new
agent.

Never removed: an agent with an open window (its score update is still owed), one whose state
is staged or being written (it just changed), one whose outputs are not confirmed yet, and a
revoked agent: a revocation is a security decision, and letting it lapse by waiting would
reinstate an agent that nobody reinstated. A partition just taken over is swept only once its
first batch has re-published the closes its last tick recorded: the state removed, nothing would
name them.

The sweep reads each owned partition in slices of a few milliseconds, each holding the
pipeline's batch lock (so no batch sees an agent half-removed) and releasing it between slices
(so signals, and revocations, never wait behind a sweep). Each partition is read at most once per
:func:`scan_interval_seconds`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from streams.processing.closing import PartitionSchedule
from streams.processing.pipeline import ScoringPipeline, wall_clock_ms
from streams.scoring.agent import AgentState
from streams.scoring.codec import decode_state
from streams.state.files import raw_items

log = logging.getLogger(__name__)

#: The first key that is not reserved (reserved keys start with NUL): where a sweep starts.
FIRST_AGENT_KEY = b"\x01"
MIN_SCAN_SECONDS = 1.0
MAX_SCAN_SECONDS = 3600.0
#: Keys read between two looks at the clock.
KEYS_PER_CLOCK_CHECK = 64


def scan_interval_seconds(ttl_seconds: float) -> float:
    """How often each partition is read: a tenth of the TTL, so an agent is removed at most 10%
    later than its TTL says; at least a second, so a test-sized TTL does not make the sweep spin;
    at most an hour, so a TTL of months still removes agents within the hour, at the cost of
    reading every state once an hour (measured: 13 us each, so 13 s of CPU per million agents,
    0.4% of a core)."""
    return max(MIN_SCAN_SECONDS, min(ttl_seconds / 10, MAX_SCAN_SECONDS))


def last_activity_ms(state: AgentState) -> int:
    """When a signal was last applied to the agent (0: unknown). States written before that was
    recorded fall back to their last recalculation, which is never earlier than that signal."""
    if state.last_signal_at_ms > 0:
        return state.last_signal_at_ms
    return state.history[-1][0] if state.history else 0


def is_expired(state: AgentState, now_ms: int, ttl_ms: int) -> bool:
    """Whether an agent may be removed now (held states are the caller's to exclude)."""
    if state.open_windows or state.revoked:
        return False
    last = last_activity_ms(state)
    return last > 0 and now_ms - last >= ttl_ms


def next_due(
    owned: Iterable[int], last_scan: dict[int, float], now: float, interval: float
) -> tuple[int | None, float]:
    """The owned partition to sweep now (the one scanned longest ago, a never-scanned one first),
    or None and how long until one is due."""
    best: int | None = None
    best_at = float("inf")
    for partition in owned:
        at = last_scan.get(partition, float("-inf"))
        if at < best_at or (at == best_at and best is not None and partition < best):
            best, best_at = partition, at
    if best is None:
        return None, interval
    wait = best_at + interval - now
    return (best, 0.0) if wait <= 0 else (None, wait)


def forget_in_schedule(schedule: PartitionSchedule, keys: set[bytes]) -> None:
    """Drop removed agents from a partition's window schedule."""
    for agents in schedule.open_windows.values():
        agents.difference_update(keys)
    for offset, closed in list(schedule.closed_by_tick.items()):
        schedule.closed_by_tick[offset] = [key for key in closed if key not in keys]
    schedule.pending.discard(keys)


class AgentExpiry:
    """The sweep: :meth:`run` as a background task of the worker."""

    def __init__(
        self,
        pipeline: ScoringPipeline,
        ttl_seconds: float,
        *,
        wall_ms: Callable[[], int] = wall_clock_ms,
        monotonic: Callable[[], float] = time.monotonic,
        slice_seconds: float = 0.003,
    ) -> None:
        self.pipeline = pipeline
        self.store = pipeline.store
        self.ttl_ms = round(ttl_seconds * 1000)
        self.interval = scan_interval_seconds(ttl_seconds)
        self._wall_ms = wall_ms
        self._monotonic = monotonic
        self.slice_seconds = slice_seconds
        self._last_scan: dict[int, float] = {}

    @property
    def enabled(self) -> bool:
        return self.ttl_ms > 0

    async def run(self) -> None:
        if not self.enabled:
            return
        log.info(
            "Agents with no signal for %.0f s are removed; each partition is read every %.1f s",
            self.ttl_ms / 1000,
            self.interval,
        )
        while True:
            partition, wait = next_due(
                self.pipeline.restored, self._last_scan, self._monotonic(), self.interval
            )
            if partition is None:
                await asyncio.sleep(min(wait, self.interval))
                continue
            await self.sweep(partition)

    async def sweep(self, partition: int) -> int:
        """Read one partition whole, a slice at a time; returns how many agents it removed."""
        self._last_scan[partition] = self._monotonic()
        cursor: bytes | None = FIRST_AGENT_KEY
        removed = 0
        while cursor is not None:
            async with self.pipeline._turn:
                if partition not in self.pipeline.restored or self.pipeline.failed is not None:
                    return removed  # given up meanwhile, or the worker is stopping
                if not self.pipeline.handlers.republishing.settled(partition):
                    return removed  # swept again once it is (see the module's docstring)
                cursor, expired = self._read_slice(partition, cursor)
                if expired:
                    await self._remove(partition, expired)
                    removed += len(expired)
            await asyncio.sleep(0)
        if removed:
            log.info(
                "Partition %d: removed %d agents with no signal for %.0f s",
                partition,
                removed,
                self.ttl_ms / 1000,
            )
        return removed

    def _read_slice(self, partition: int, start: bytes) -> tuple[bytes | None, list[bytes]]:
        """Agents from ``start`` on that have expired, for a few milliseconds; and where to go on
        (None: the partition is done)."""
        store = self.store
        unconfirmed = self.pipeline.durability.unconfirmed
        now_ms = self._wall_ms()
        deadline = time.perf_counter() + self.slice_seconds
        expired: list[bytes] = []
        for count, (key, value) in enumerate(raw_items(store.db(partition), start), 1):
            if not store.is_held(partition, key) and not unconfirmed(partition, key):
                try:
                    state = decode_state(value)
                except Exception:  # damage is the take-over check's business, not the sweep's
                    continue
                if is_expired(state, now_ms, self.ttl_ms):
                    expired.append(key)
            if count % KEYS_PER_CLOCK_CHECK == 0 and time.perf_counter() > deadline:
                return key + b"\x00", expired  # the smallest key after this one
        return None, expired

    async def _remove(self, partition: int, keys: list[bytes]) -> None:
        await self.store.delete_agents(partition, keys)
        schedule = self.pipeline.schedules.get(partition)
        if schedule is not None:
            forget_in_schedule(schedule, set(keys))
        counters = self.store.counters
        counters.agents_expired += len(keys)
        counters.agents[partition] = max(0, counters.agents.get(partition, 0) - len(keys))
