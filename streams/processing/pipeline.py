"""The hot path: one batch of records in, state changes and outputs out.

A batch is split by partition. Each partition's records are processed in order, synchronously,
against the states as the store holds them (each looked up once per batch). Changed states are
staged in the store rather than written at once: an agent active in many batches in a short time
is encoded and written once. What is stored before what (the states behind outputs, the outputs,
the other states, then the positions and clocks) is kept by :mod:`streams.processing.durability`;
a crash at any point replays records whose effects are either absent (applied again) or recorded
(recognised, and their recorded outputs re-published identically).

Signals and Faust's records (ticks, commands) arrive from two consumers; one lock makes their
batches take turns, since both read and write the same states.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from streams.kafka.delivery import Delivery
from streams.kafka.records import Record
from streams.kafka.topics import TopicNames
from streams.processing.ahead import Ahead
from streams.processing.durability import Durability, Outbox
from streams.processing.durability import PipelineFailed as PipelineFailed
from streams.processing.gaps import OffsetGuard, Rewind
from streams.processing.handlers import PipelineCounters, RecordHandlers
from streams.processing.intake import DEFAULT_KEPT_BYTES, SignalIntake
from streams.processing.merge import SignalMerge, arrivals
from streams.processing.ownership import Ownership
from streams.processing.progress import SignalProgress
from streams.processing.turns import SignalTurnBudget
from streams.processing.windowclosing import WindowClosing
from streams.scoring.agent import ConfigAt
from streams.scoring.model import ScoringConfig
from streams.scoring.windows import WindowPolicy
from streams.state.store import CLOCK_KEY, StateStore

log = logging.getLogger(__name__)


def by_partition(
    items: Sequence[Any], partition_of: Callable[[Any], int] = lambda record: record.partition
) -> dict[int, list[Any]]:
    """``items`` grouped by partition, each group in the order given."""
    groups: dict[int, list[Any]] = {}
    for item in items:
        groups.setdefault(partition_of(item), []).append(item)
    return groups


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def record_of(event: Any) -> Record:
    """A Faust event's message as a :class:`Record` (Faust keeps timestamps in seconds)."""
    m = event.message
    return Record(m.topic, m.partition, m.offset, m.key, m.value, round(m.timestamp * 1000))


class ScoringPipeline:
    def __init__(
        self,
        *,
        app: Any,
        store: StateStore,
        names: TopicNames,
        windows: WindowPolicy,
        config: Callable[[], ScoringConfig],
        intake: SignalIntake,
        delivery: Delivery,
        rewind: Rewind,
        tick_tolerance_ms: int = 60_000,
        dead_letter_kept_bytes: int = DEFAULT_KEPT_BYTES,
        config_ready: asyncio.Event | None = None,
        now_ms: Callable[[], int] = wall_clock_ms,
        close_slice_seconds: float = 0.005,
        ownership: Ownership | None = None,
        config_at: ConfigAt | None = None,
        merge_wait_ms: int = 0,
        # A topic-partition not caught up is waited for this long (see processing.merge):
        # measured, fetches under load hand records over up to a second apart.
        merge_fetch_wait_ms: int = 30_000,
        release_max: int = 2_000,
    ) -> None:
        self.app = app
        self.store = store
        self.config = config
        self.config_ready = config_ready
        self.names = names
        self.counters = PipelineCounters()
        #: Turn records into state changes and outputs (no I/O: that is this class's part).
        self.handlers = RecordHandlers(
            store=store,
            names=names,
            windows=windows,
            config=config,
            intake=intake,
            counters=self.counters,
            now_ms=now_ms,
            tick_tolerance_ms=tick_tolerance_ms,
            dead_letter_kept_bytes=dead_letter_kept_bytes,
            config_at=config_at,
            merge_wait_ms=merge_wait_ms,
        )
        self.now_ms = now_ms
        self.windows = windows
        #: Signals read and not applied yet, released in event-time order (see its module).
        self.merge = SignalMerge(
            len(names.signals), wait_ms=merge_wait_ms, fetch_wait_ms=merge_fetch_wait_ms
        )
        self.handlers.idle = self.merge.idle
        #: Signals applied per turn: as many as fit in a few milliseconds, at most
        #: ``release_max`` (a turn holds the event loop: see streams.processing.turns).
        self.turn_budget = SignalTurnBudget(release_max)
        # The handlers' per-partition indexes, shared: dropped here when a partition goes.
        self.schedules = self.handlers.schedules
        self.clocks = self.handlers.clocks
        self.dimension_of_topic = self.handlers.dimension_of_topic
        self.delivery = delivery
        self.offsets = OffsetGuard(rewind)
        self._turn = asyncio.Lock()
        #: Keeps the order in which states, outputs and progress are stored (see its module).
        self.durability = Durability(store, delivery, self._turn)
        #: Signal positions and stream time, stored together (see its module).
        self.progress = SignalProgress(store, names.signals)
        self.handlers.stored_stream_time = self.progress.stored_stream_time
        self.handlers.positions = self.progress.positions
        #: Which partitions are owned: only their records are processed.
        self.ownership = ownership if ownership is not None else Ownership()
        #: Closes the windows found due, in turns with the signal batches.
        self.closing = WindowClosing(
            handlers=self.handlers,
            durability=self.durability,
            turn=self._turn,
            config=config,
            min_turn_seconds=close_slice_seconds,
        )

    # -- partition lifecycle -------------------------------------------------------------------

    def mark_restored(self, partitions: set[int]) -> None:
        """Own exactly ``partitions`` (their state restored): see :class:`Ownership`."""
        self.ownership.take_over(partitions)

    @property
    def restored(self) -> frozenset[int]:
        """The partitions owned, their state restored: only their records are processed."""
        return self.ownership.owned

    def forget_partitions(self, partitions: set[int]) -> None:
        """Drop in-memory indexes of partitions this worker no longer owns."""
        for p in partitions:
            self.schedules.pop(p, None)
            self.clocks.pop(p, None)
        self.offsets.forget(partitions)
        self.handlers.republishing.forget(partitions)
        self.merge.forget(partitions)
        self.store.forget(partitions)
        self.progress.forget(partitions)

    async def process_batch(self, events: Sequence[Any]) -> None:
        """Process Faust's events (ticks and commands), guarding against skipped offsets.

        What they led to is written before returning (the clocks here, the closes and
        reinstatements with their outputs): Faust commits these offsets on its own schedule,
        after flushing the producer.
        """
        await self._wait_for_config()
        await self.ownership.settled.wait()
        async with self._turn:
            admitted, holes = self.offsets.admit(events)
            records = [record_of(event) for event in admitted]
            # Records of a partition revoked meanwhile: not committed, the new owner reads them.
            owned = [r for r in records if r.partition in self.restored]
            tick_partitions = {r.partition for r in owned if r.topic == self.names.ticks}
            last_ticks = {p: self.handlers.clock_for(p).last_tick_offset for p in tick_partitions}
            await self._process_records(owned)
            # Stream time that ticks moved is stored with the positions, as the signals' is.
            self._stage_progress(tick_partitions)
            await self.durability.send_clocks()
            if holes:
                await self.offsets.rewind_holes(holes)
        await self.durability.confirm_clocks()
        # Partitions a tick of this batch was applied to: closes are recorded as that tick's,
        # and re-published if it is delivered again, so only they close now (a tick committed
        # already would never be delivered again).
        clock = self.handlers.clock_for
        ticked = {p for p, last in last_ticks.items() if clock(p).last_tick_offset != last}
        # Before returning, so that Faust commits a tick's offset once its closes are done (or,
        # for very many, under way: see WindowClosing.close_due).
        await self.closing.close_due(ticked)
        for partition in ticked & self.restored:
            # Every close recorded as this tick's is confirmed (those left pending will be the
            # next tick's): stored with the next clock or checkpoint, it spares a clean hand-over
            # re-publishing them.
            partition_clock = clock(partition)
            partition_clock.closes_confirmed = partition_clock.last_tick_offset
            self.store.stage_last(partition, CLOCK_KEY, partition_clock.encode())

    async def process_records(self, records: Sequence[Any]) -> None:
        """Process signal records read by a plain aiokafka consumer (offsets are contiguous
        there, and a gap is a real one, a transaction marker, so no guard is needed): each is
        read and merged, and what the merge releases is applied, in event-time order. Called
        with no records too, to release those held for a time."""
        await self._wait_for_config()
        async with self._turn:
            started = time.perf_counter()
            now_ms = self.now_ms()
            if records:
                self.merge.add(
                    arrivals(
                        records, self.handlers.intake, self.windows, self.dimension_of_topic, now_ms
                    )
                )
            # Critical signals first, alone: their revocations are sent before the batch.
            ahead = self.merge.take_ahead(now_ms)
            if ahead:
                await self._committing(self._apply_ahead, ahead)
            budget = self.turn_budget
            released = self.merge.release(now_ms, budget.signals())
            if released:
                applied_in = await self._process_records(released)
                budget.observe(len(released), applied_in, (now_ms - released[-1].timestamp) / 1000)
                self._stage_progress(self.progress.advance(released))
            ended = time.perf_counter()
            self.closing.signal_turn_seconds = ended - started
            self.closing.signal_turn_ended = ended

    def signal_positions(self, partition: int) -> list[int]:
        """Next offset to read per signal topic (dimension order) of ``partition``: the position
        stored with its states, so that states and positions always move together."""
        return self.progress.positions(partition)

    def _stage_progress(self, partitions: set[int]) -> None:
        for partition in partitions:
            self.progress.stage(partition, self.handlers.clock_for(partition).time_ms)

    @property
    def observe_latency(self) -> Callable[[float], None] | None:
        """Called with each applied signal's latency in seconds (metrics install it)."""
        return self.handlers.observe_latency

    @observe_latency.setter
    def observe_latency(self, observe: Callable[[float], None] | None) -> None:
        self.handlers.observe_latency = observe

    @property
    def observe_revocation(self) -> Callable[[float], None] | None:
        """Called with the seconds from each revoking critical signal's record timestamp until
        its revocation was confirmed (metrics install it)."""
        return self.durability.observe_revocation

    @observe_revocation.setter
    def observe_revocation(self, observe: Callable[[float], None] | None) -> None:
        self.durability.observe_revocation = observe

    @property
    def failed(self) -> BaseException | None:
        """Why a batch failed part-way, if one did (the worker then stores nothing more)."""
        return self.durability.failed

    async def make_durable(self) -> None:
        """Store every staged state, then the progress it leads to (every state flush interval,
        and before a partition is given up): see :meth:`Durability.checkpoint`."""
        await self.durability.checkpoint()

    async def _wait_for_config(self) -> None:
        if self.config_ready is not None and not self.config_ready.is_set():
            # Never score with stale weights: wait until the config topic has been read.
            await self.config_ready.wait()

    async def _process_records(self, records: Sequence[Any]) -> float:
        return await self._committing(self._apply_records, records)

    def _apply_records(self, records: Sequence[Any], outbox: Outbox) -> None:
        for partition, partition_records in by_partition(records).items():
            self.handlers.process_partition(partition, partition_records, outbox)

    def _apply_ahead(self, ahead: Sequence[Ahead], outbox: Outbox) -> None:
        for partition, partition_ahead in by_partition(ahead, lambda a: a.record.partition).items():
            self.handlers.apply_ahead(partition, partition_ahead, outbox)

    async def _committing(
        self, apply: Callable[[Sequence[Any], Outbox], None], items: Sequence[Any]
    ) -> float:
        """``apply`` the items, then store and send what they led to (the states behind
        outputs, then the outputs). Returns the seconds the applying took."""
        try:
            outbox = Outbox()
            started = time.perf_counter()
            apply(items, outbox)
            applied_in = time.perf_counter() - started
            await self.durability.commit_outputs(outbox)
            return applied_in
        except BaseException as exc:
            # Cached and staged states may hold half-applied changes: forget them all, and
            # refuse every later persist, so no position past them is ever stored.
            self.durability.fail(exc)
            raise
