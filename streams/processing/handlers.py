"""Records in, state changes and outputs out: synchronous, and no I/O.

:class:`RecordHandlers` applies one partition's records (signals here; ticks and commands in
:mod:`streams.processing.control`) to the agent states, stages what changed in the store's memory
and puts what must be sent in an :class:`~streams.processing.durability.Outbox`. It never waits for
anything: when the states and the outbox are stored and sent is the caller's
(:mod:`streams.processing.pipeline`) and :mod:`streams.processing.durability`'s business. It also
keeps the per-partition indexes the handlers need:
the window schedule and the partition clock, both rebuilt from the stored state on first use.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from streams.kafka.topics import TopicNames
from streams.processing.ahead import APPLIED_AHEAD, Ahead
from streams.processing.closing import PartitionClock, PartitionSchedule, stored_clock
from streams.processing.control import ControlRecords
from streams.processing.durability import Outbox
from streams.processing.intake import AcceptedSignal, Rejection, SignalIntake
from streams.processing.publishing import Publications
from streams.processing.republishing import Republishing
from streams.scoring.agent import (
    ConfigAt,
    SignalTrigger,
    apply_signal,
    close_windows,
)
from streams.scoring.model import CRITICAL_SIGNAL_VALUE, ScoringConfig
from streams.scoring.windows import WindowPolicy
from streams.state.store import CLOCK_KEY, PartitionStates, StateStore

log = logging.getLogger(__name__)


@dataclass(slots=True)
class PipelineCounters:
    signals_applied: list[int] = field(default_factory=lambda: [0] * 5)
    duplicates_skipped: int = 0
    dead_letters: int = 0
    revocations: int = 0
    #: Signals applied ahead of their turn (critical signals and their agents' earlier ones).
    applied_ahead: int = 0
    windows_closed: int = 0
    updates_republished: int = 0
    ticks: int = 0
    #: How far behind the wall clock the last tick was when processed (ms).
    tick_lag_ms: int = 0
    #: Records of the internal topics (ticks, commands) ignored, by (topic, kind): "stale" (a
    #: tick long past) or "refused" (malformed, forged, on the wrong partition).
    internal_rejected: Counter[tuple[str, str]] = field(default_factory=Counter)

    def describe(self) -> str:
        return (
            f"signals applied {sum(self.signals_applied)}, "
            f"redeliveries skipped {self.duplicates_skipped}, dead letters {self.dead_letters}, "
            f"windows closed {self.windows_closed}, revocations {self.revocations}, "
            f"updates re-published {self.updates_republished}, ticks {self.ticks} "
            f"(last {self.tick_lag_ms} ms behind)"
        )


class RecordHandlers:
    def __init__(
        self,
        *,
        store: StateStore,
        names: TopicNames,
        windows: WindowPolicy,
        config: Callable[[], ScoringConfig],
        intake: SignalIntake,
        counters: PipelineCounters,
        now_ms: Callable[[], int],
        tick_tolerance_ms: int,
        dead_letter_kept_bytes: int,
        config_at: ConfigAt | None = None,
        merge_wait_ms: int = 0,
    ) -> None:
        self.store = store
        self.names = names
        self.windows = windows
        self.config = config
        #: The configuration in force at a time: a window's at its end, a signal's at its time.
        self.config_at: ConfigAt = config_at or (lambda _at_ms: config())
        #: How long a signal may take to reach the worker after its timestamp (the merge waits
        #: as long): an idle partition's stream time stays as far behind the wall clock.
        self.merge_wait_ms = merge_wait_ms
        #: Whether a partition has nothing left to read on any signal topic (the signal feed's
        #: merge installs it): only then do ticks move its stream time.
        self.idle: Callable[[int], bool] = lambda _partition: True
        #: The stream time stored with a partition's signal positions (the pipeline's).
        self.stored_stream_time: Callable[[int], int | None] = lambda _partition: None
        self.intake = intake
        self.counters = counters
        self.now_ms = now_ms
        #: A tick further than this from the wall clock is ignored (forged, or a broken clock);
        #: a partition clock is never further ahead than this either.
        self.tick_tolerance_ms = tick_tolerance_ms
        #: Puts what a batch publishes in its outbox.
        self.publish = Publications(names, windows, counters, now_ms, dead_letter_kept_bytes)
        self.dead_letter = self.publish.dead_letter
        self.dimension_of_topic = {name: i for i, name in enumerate(names.signals)}
        #: Called with each applied signal's latency in seconds (metrics install it).
        self.observe_latency: Callable[[float], None] | None = None
        self.schedules: dict[int, PartitionSchedule] = {}
        self.clocks: dict[int, PartitionClock] = {}
        #: Next signal offset to apply per topic of a partition (the pipeline's progress).
        self.positions: Callable[[int], list[int]] = lambda _partition: [0] * len(names.signals)
        #: What a partition's states recorded before it was taken over, re-published in time.
        self.republishing = Republishing(self.publish, lambda partition: self.positions(partition))
        self.control = ControlRecords(self)

    def schedule_for(self, partition: int) -> PartitionSchedule:
        schedule = self.schedules.get(partition)
        if schedule is None:
            started = time.perf_counter()
            schedule = PartitionSchedule()
            count = schedule.rebuild(self.store.iter_agents(partition))
            self.schedules[partition] = schedule
            log.info(
                "Partition %d: window schedule rebuilt from %d stored agents in %.3f s",
                partition,
                count,
                time.perf_counter() - started,
            )
        return schedule

    def clock_for(self, partition: int) -> PartitionClock:
        clock = self.clocks.get(partition)
        if clock is None:
            clock = self.clocks[partition] = stored_clock(
                partition,
                self.store.get(partition, CLOCK_KEY),
                self.stored_stream_time(partition),
                self.now_ms() + self.tick_tolerance_ms,
            )
            self.republishing.taken_over(partition)
        return clock

    def process_partition(self, partition: int, records: list[Any], outbox: Outbox) -> None:
        """Apply one partition's records in order, and stage the states they changed."""
        schedule = self.schedule_for(partition)
        clock = self.clock_for(partition)
        states = PartitionStates(self.store, partition)
        self.republishing.owed_closes(partition, states, schedule, clock, outbox)
        ticks_topic = self.names.ticks
        ticked = False
        stream_time_before = clock.time_ms
        # One processing time and one configuration per batch: a batch takes milliseconds, and a
        # configuration change takes effect between batches.
        now_ms = self.now_ms()
        config = self.config()
        for message in records:
            if message.topic == ticks_topic:
                ticked |= self.control.on_tick(message, states, schedule, clock, outbox)
            elif message.topic == self.names.commands:
                self.control.on_command(message, states, outbox)
            else:
                self._on_signal(message, states, schedule, clock, outbox, now_ms, config)
        states.stage_changes()
        if clock.time_ms != stream_time_before:
            # Stream time moved on: windows it passed are closed in turns, after a tick (only a
            # critical signal closes the due windows of its agent first, see apply_signal).
            windows, clock_ms = self.windows, clock.time_ms
            schedule.pending.extend(
                schedule.take_due(lambda start: windows.is_closed(start, clock_ms))
            )
        if ticked:
            # The last tick applied, written when the tick batch ends (its stream time goes
            # with the signal positions instead: see streams.processing.progress).
            self.store.stage_last(partition, CLOCK_KEY, clock.encode())

    def apply_ahead(self, partition: int, ahead: list[Ahead], outbox: Outbox) -> None:
        """Apply records ahead of their turn (see streams.processing.ahead), each with the stream
        time it sees in its turn; the partition's stream time moves when they are released."""
        schedule = self.schedule_for(partition)
        clock = self.clock_for(partition)
        states = PartitionStates(self.store, partition)
        self.republishing.owed_closes(partition, states, schedule, clock, outbox)
        now_ms = self.now_ms()
        config = self.config()
        self.counters.applied_ahead += len(ahead)
        for record, stream_floor_ms in ahead:
            signal = record.signal
            assert isinstance(signal, AcceptedSignal)  # only valid signals are taken ahead
            stream_ms = max(clock.time_ms, stream_floor_ms)
            self.republishing.applied_ahead(partition, record.dimension, record.offset)
            self._apply(record, signal, states, schedule, stream_ms, outbox, now_ms, config)
        states.stage_changes()

    def _on_signal(
        self,
        message: Any,
        states: PartitionStates,
        schedule: PartitionSchedule,
        clock: PartitionClock,
        outbox: Outbox,
        now_ms: int,
        config: ScoringConfig,
    ) -> None:
        # Read, and its time taken, when it arrived (see processing.merge).
        signal = message.signal
        if isinstance(signal, Rejection):
            self.dead_letter(message, signal, outbox)
            return
        if signal is not APPLIED_AHEAD:
            self._apply(message, signal, states, schedule, clock.time_ms, outbox, now_ms, config)
        # Stream time: the latest signal time applied (a redelivery moves it as its first
        # delivery did, from the clock stored with the positions it is replayed from).
        if message.event_ms > clock.time_ms:
            clock.time_ms = message.event_ms

    def _apply(
        self,
        message: Any,
        signal: AcceptedSignal,
        states: PartitionStates,
        schedule: PartitionSchedule,
        stream_ms: int,
        outbox: Outbox,
        now_ms: int,
        config: ScoringConfig,
    ) -> None:
        dimension: int = message.dimension
        partition: int = message.partition
        key: bytes = message.key
        state = states.get_or_new(key)
        # A critical signal applied for the first time may close windows or revoke, changing
        # what the state records (see streams.processing.republishing).
        first_time = message.offset > state.applied_offsets[dimension]
        changes = signal.value < CRITICAL_SIGNAL_VALUE and first_time
        earlier = (
            self.republishing.before_change(partition, key, state, outbox) if changes else None
        )
        windows_open = len(state.open_windows)
        outcome = apply_signal(
            signal.agent_did,
            state,
            SignalTrigger(dimension, message.partition, message.offset, signal.signal_id),
            signal.value,
            message.event_ms,
            now_ms,
            stream_ms,
            self.windows,
            config,
            signal.source,
            config_at=self.config_at,
        )
        if changes and outcome.applied:
            self.republishing.after_change(
                partition, key, state, earlier, outcome.closed, outcome.revocation, outbox
            )
        if outcome.closed is not None:
            if outcome.applied:
                self.counters.windows_closed += len(outcome.closed.updates)
            else:
                self.counters.updates_republished += len(outcome.closed.updates)
            self.publish.closes(signal.agent_did, key, outcome.closed, message.partition, outbox)
        if outcome.applied:
            self.counters.signals_applied[dimension] += 1
            if self.observe_latency is not None:
                self.observe_latency(max(0.0, time.time() - message.timestamp / 1000))
            states.mark_dirty(key)
            # An ordinary signal only ever adds a window (closing is a critical signal's, or the
            # closing turns'): the schedule needs to hear only of the one in a hundred that does.
            if changes or len(state.open_windows) != windows_open:
                schedule.track(key, state)
            if outcome.revocation is not None:
                self.publish.revocation(
                    signal.agent_did, key, outcome.revocation, message.partition, outbox
                )
                outbox.revoking_signals_ms.append(message.timestamp)
        else:
            self.counters.duplicates_skipped += 1
            # A redelivery: the state may exist only locally if the crash beat the changelog, so
            # write it again; and re-publish the revocation this very signal caused, if any.
            states.mark_dirty(key)
            if outcome.republish is not None:
                self.publish.revocation(
                    signal.agent_did, key, outcome.republish, message.partition, outbox
                )

    def close_agent(
        self,
        key: bytes,
        partition: int,
        states: PartitionStates,
        clock: PartitionClock,
        config: ScoringConfig,
        outbox: Outbox,
    ) -> None:
        state = states.get(key)
        if state is None:  # pragma: no cover - the schedule only holds stored agents
            return
        agent_did = key.decode()
        earlier = self.republishing.before_change(partition, key, state, outbox)
        outcome = close_windows(
            agent_did,
            state,
            clock.time_ms,
            clock.last_tick_offset,
            self.windows,
            config,
            config_at=self.config_at,
        )
        if not outcome.updates:
            return
        self.republishing.after_change(partition, key, state, earlier, outcome, None, outbox)
        states.mark_dirty(key)
        self.counters.windows_closed += len(outcome.updates)
        self.publish.closes(agent_did, key, outcome, partition, outbox)
