"""The hot path: one batch of records in, state changes and outputs out.

A batch is split by partition. Each partition's records are processed in order, synchronously,
against the states as the store holds them (each looked up once per batch). Changed states are
staged in the store rather than written at once: an agent active in many batches in a short time
is encoded and written once. Outputs are published in an order that makes them safe to repeat:

1. dead letters are queued;
2. if the batch produced score updates or revocations, the states of their agents are written
   (RocksDB and changelog) and the producer flushed, so the state that records those outputs is
   durable in the changelog before any of them can be seen;
3. the updates and revocations are published.

Staged states are also written every few seconds and before a partition is given up
(:meth:`ScoringPipeline.make_durable`), followed by the signal positions they lead to; a tick
batch writes the clocks it moved before Faust commits its offsets. So a crash at any point replays
records whose effects are either absent (applied again) or recorded (recognised, and their
recorded outputs re-published identically).

Signals and Faust's records (ticks, commands) arrive from two consumers; one lock makes their
batches take turns, since both read and write the same states.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from .closing import PartitionClock, PartitionSchedule, decode_tick, tick_refusal
from .delivery import Delivery, Outgoing
from .gaps import OffsetGuard, Rewind
from .intake import DEFAULT_KEPT_BYTES, Rejection, SignalIntake, dead_letter
from .messages import read_command
from .outputs import reinstatement_message, revocation_message, score_update_message
from .scoring.agent import (
    AgentState,
    Revocation,
    SignalTrigger,
    WindowTrigger,
    apply_reinstatement,
    apply_signal,
    close_windows,
)
from .scoring.model import ScoringConfig
from .scoring.windows import WindowPolicy
from .statestore import CLOCK_KEY, SIGNAL_POSITIONS_KEY, PartitionStates, StateStore
from .topics import TopicNames

log = logging.getLogger(__name__)


class PipelineFailed(RuntimeError):
    """A batch failed part-way: the worker must stop and replay from its last commit."""


#: Longest a tick batch spends closing windows (see ScoringPipeline._close_due).
CLOSE_BUDGET_SECONDS = 1.0
#: Longest turn window closing takes at once, however long signal batches take theirs.
CLOSE_SLICE_MAX_SECONDS = 0.05
#: Agents written per turn by make_durable: about a millisecond of encoding and writing.
PERSIST_SLICE = 200


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class Record(NamedTuple):
    """One consumed record, whichever consumer read it (aiokafka's ConsumerRecord has the same
    attributes, so the signal feed passes its records as they are)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    #: The record's timestamp in milliseconds.
    timestamp: int


def record_of(event: Any) -> Record:
    """A Faust event's message as a :class:`Record` (Faust keeps timestamps in seconds)."""
    m = event.message
    return Record(m.topic, m.partition, m.offset, m.key, m.value, round(m.timestamp * 1000))


@dataclass(slots=True)
class Outbox:
    """Messages produced by one batch: dead letters, then outputs that record agent states."""

    dead_letters: list[Outgoing] = field(default_factory=list)
    ordered: list[Outgoing] = field(default_factory=list)


@dataclass(slots=True)
class PipelineCounters:
    signals_applied: list[int] = field(default_factory=lambda: [0] * 5)
    duplicates_skipped: int = 0
    dead_letters: int = 0
    revocations: int = 0
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
    ) -> None:
        self.app = app
        self.store = store
        self.names = names
        self.windows = windows
        self.config = config
        self.config_ready = config_ready
        #: Called with each applied signal's latency in seconds (metrics install it).
        self.observe_latency: Callable[[float], None] | None = None
        self.intake = intake
        self.delivery = delivery
        #: A tick further than this from the wall clock is ignored (forged, or a broken clock);
        #: a partition clock is never further ahead than this either.
        self.tick_tolerance_ms = tick_tolerance_ms
        self.dead_letter_kept_bytes = dead_letter_kept_bytes
        self._last_refusal_logged: dict[tuple[str, str], float] = {}
        self.now_ms = now_ms
        self.dimension_of_topic = {name: i for i, name in enumerate(names.signals)}
        self.schedules: dict[int, PartitionSchedule] = {}
        self.clocks: dict[int, PartitionClock] = {}
        self.offsets = OffsetGuard(rewind)
        self.counters = PipelineCounters()
        self._turn = asyncio.Lock()
        self._durable = asyncio.Lock()  # one make_durable at a time
        self._positions: dict[int, list[int]] = {}
        #: Partitions whose state is restored and owned: only their records are processed.
        self.restored: set[int] = set()
        #: Set while no take-over is under way (Faust's records wait for it).
        self.restore_done = asyncio.Event()
        #: How long window closing may hold the lock before letting a signal batch in.
        self.close_slice_seconds = close_slice_seconds
        # How long the last signal batch held the lock: closing takes turns as long (see
        # _close_turn_seconds).
        self._signal_turn_seconds = 0.0
        #: Set when a batch failed part-way; nothing is persisted after it.
        self.failed: BaseException | None = None

    # -- partition lifecycle -------------------------------------------------------------------

    def mark_restored(self, partitions: set[int]) -> None:
        self.restored = set(partitions)
        self.restore_done.set()

    def mark_unrestored(self, partitions: set[int]) -> None:
        self.restored -= partitions
        self.restore_done.clear()

    def forget_partitions(self, partitions: set[int]) -> None:
        """Drop in-memory indexes of partitions this worker no longer owns."""
        for p in partitions:
            self.schedules.pop(p, None)
            self.clocks.pop(p, None)
        self.offsets.forget(partitions)
        self.store.forget(partitions)
        for p in partitions:
            self._positions.pop(p, None)

    def _schedule_for(self, partition: int) -> PartitionSchedule:
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

    def _clock_for(self, partition: int) -> PartitionClock:
        clock = self.clocks.get(partition)
        if clock is None:
            clock = PartitionClock.decode(self.store.get(partition, CLOCK_KEY))
            limit = self.now_ms() + self.tick_tolerance_ms
            if clock.time_ms > limit:
                # Stored before ticks were checked (or by a wall clock since set back): a clock
                # ahead of time would make every on-time signal late until time caught up.
                log.error(
                    "Partition %d: stored clock %d is ahead of the wall clock; held back to %d",
                    partition,
                    clock.time_ms,
                    limit,
                )
                clock.time_ms = limit
            self.clocks[partition] = clock
        return clock

    # -- the batch -----------------------------------------------------------------------------

    async def process_batch(self, events: Sequence[Any]) -> None:
        """Process Faust's events (ticks and commands), guarding against skipped offsets.

        What they led to is written before returning (the clocks here, the closes and
        reinstatements with their outputs): Faust commits these offsets on its own schedule,
        after flushing the producer.
        """
        await self._wait_for_config()
        await self.restore_done.wait()
        async with self._turn:
            admitted, holes = self.offsets.admit(events)
            records = [record_of(event) for event in admitted]
            # Records of a partition revoked meanwhile: not committed, the new owner reads them.
            await self._process_records([r for r in records if r.partition in self.restored])
            # The clocks these ticks moved, before Faust commits the ticks. Only those: the
            # states of signals staged meanwhile do not depend on a tick's commit, and writing
            # them all on every tick would stall signals four times a second.
            await self.store.persist_entries(CLOCK_KEY)
            await self.store.confirm()
            if holes:
                await self.offsets.rewind_holes(holes)
        # Before returning, so that Faust commits a tick's offset once its closes are done (or,
        # for very many, under way: see _close_due).
        await self._close_due()

    async def process_records(self, records: Sequence[Any]) -> None:
        """Process records read by a plain aiokafka consumer (signals): offsets are contiguous
        there, and a gap is a real one (a transaction marker), so no guard is needed."""
        await self._wait_for_config()
        async with self._turn:
            started = time.perf_counter()
            await self._process_records(records)
            self._stage_positions(records)
            self._signal_turn_seconds = time.perf_counter() - started

    def signal_positions(self, partition: int) -> list[int]:
        """Next offset to read per signal topic (dimension order) of ``partition``: the position
        stored with its states, so that states and positions always move together."""
        positions = self._positions.get(partition)
        if positions is None:
            stored = self.store.signal_positions(partition)
            positions = self._positions[partition] = stored or [0] * len(self.names.signals)
        return positions

    def _stage_positions(self, records: Sequence[Any]) -> None:
        # A partition's records come in offset order: the last of each topic-partition wins.
        last = {(record.topic, record.partition): record.offset for record in records}
        moved: set[int] = set()
        for (topic, partition), offset in last.items():
            self.signal_positions(partition)[self.dimension_of_topic[topic]] = offset + 1
            moved.add(partition)
        for partition in moved:
            positions = self._positions[partition]
            self.store.stage_last(partition, SIGNAL_POSITIONS_KEY, orjson.dumps(positions))

    async def make_durable(self) -> None:
        """Write every staged state and wait until the changelog holds them: periodically, and
        before a partition is given up.

        In slices of a few hundred agents, letting signal batches in between: written at once,
        a couple of seconds' worth of states holds the worker for a tenth of a second, and a
        revocation with it. The entries that must follow the states (signal positions, clocks)
        are written last.
        """
        async with self._durable:
            async with self._turn:
                self._check_failed()
                agents, last = self.store.begin_persist()
            for partition, keys in agents:
                for start in range(0, len(keys), PERSIST_SLICE):
                    async with self._turn:
                        self._check_failed()
                        await self.store.write_persisting(
                            partition, keys[start : start + PERSIST_SLICE]
                        )
                    await asyncio.sleep(0)
            # The positions and clocks say "everything before me is stored": only once it is.
            await self.store.confirm()
            async with self._turn:
                self._check_failed()
                await self.store.write_entries(last)
            await self.store.confirm()

    def _check_failed(self) -> None:
        if self.failed is not None:
            # A batch failed half-applied; its changes were dropped, and nothing after it may
            # be written. The worker stops; a restart replays from the stored positions.
            raise PipelineFailed("a batch failed; refusing to persist") from self.failed

    async def _persist_for(self, outbox: Outbox) -> None:
        """Write the states that record the outbox's outputs (they go first: see the module
        docstring); only those, so that a revocation does not wait for a second's worth of
        other agents' states to be encoded."""
        if not outbox.ordered:
            return
        self._check_failed()
        await self.store.persist_agents({(o.partition, o.key) for o in outbox.ordered if o.key})
        await self.store.confirm()

    async def _wait_for_config(self) -> None:
        if self.config_ready is not None and not self.config_ready.is_set():
            # Never score with stale weights: wait until the config topic has been read.
            await self.config_ready.wait()

    async def _process_records(self, records: Sequence[Any]) -> None:
        try:
            by_partition: dict[int, list[Any]] = {}
            for record in records:
                by_partition.setdefault(record.partition, []).append(record)
            outbox = Outbox()
            for partition, partition_records in by_partition.items():
                self._process_partition(partition, partition_records, outbox)
            await self._persist_for(outbox)
            await self._publish(outbox)
        except BaseException as exc:
            # Cached and staged states may hold half-applied changes: forget them all, and
            # refuse every later persist, so no position past them is ever stored.
            self.failed = exc
            self.store.forget()
            raise

    def _process_partition(self, partition: int, records: list[Any], outbox: Outbox) -> None:
        """Apply one partition's records in order, and stage the states they changed."""
        schedule = self._schedule_for(partition)
        clock = self._clock_for(partition)
        states = PartitionStates(self.store, partition)
        ticks_topic = self.names.ticks
        clock_moved = False
        # One processing time and one configuration per batch: a batch takes milliseconds, and a
        # configuration change takes effect between batches.
        now_ms = self.now_ms()
        config = self.config()
        for message in records:
            if message.topic == ticks_topic:
                clock_moved |= self._on_tick(message, states, schedule, clock, outbox)
            elif message.topic == self.names.commands:
                self._on_command(message, states, outbox)
            else:
                self._on_signal(message, states, schedule, clock, outbox, now_ms, config)
        states.stage_changes()
        if clock_moved:
            # Written when the tick batch ends. A stored clock ahead of the closes it made due is
            # safe: those agents' windows are still open in their stored states, so a restarted
            # worker's schedule finds them due again and closes them at its next tick.
            self.store.stage_last(partition, CLOCK_KEY, clock.encode())

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
        dimension = self.dimension_of_topic[message.topic]
        record_ms: int = message.timestamp
        signal = self.intake.read(
            dimension, message.partition, message.key, message.value, record_ms, now_ms
        )
        if isinstance(signal, Rejection):
            self._dead_letter(message, signal, outbox)
            return
        key: bytes = message.key
        state = states.get_or_new(key)
        outcome = apply_signal(
            signal.agent_did,
            state,
            SignalTrigger(dimension, message.partition, message.offset, signal.signal_id),
            signal.value,
            signal.timestamp_ms,
            now_ms,
            clock.time_ms,
            self.windows,
            config,
            signal.source,
        )
        if outcome.applied:
            self.counters.signals_applied[dimension] += 1
            if self.observe_latency is not None:
                self.observe_latency(max(0.0, time.time() - record_ms / 1000))
            states.mark_dirty(key)
            schedule.track(key, state)
            if outcome.revocation is not None:
                self._queue_revocation(
                    signal.agent_did, key, outcome.revocation, message.partition, outbox
                )
        else:
            self.counters.duplicates_skipped += 1
            # A redelivery: the state may exist only locally if the crash beat the changelog, so
            # write it again; and re-publish the revocation this very signal caused, if any.
            states.mark_dirty(key)
            if outcome.republish is not None:
                self._queue_revocation(
                    signal.agent_did, key, outcome.republish, message.partition, outbox
                )

    def _refuse_internal(self, message: Any, kind: str, reason: str) -> None:
        """Count an ignored record of an internal topic, and log it (at most once per topic and
        kind every ten seconds: a flood of forged records must not become a flood of logs)."""
        counted = (message.topic, kind)
        self.counters.internal_rejected[counted] += 1
        now = time.monotonic()
        if now - self._last_refusal_logged.get(counted, -10.0) >= 10.0:
            self._last_refusal_logged[counted] = now
            log.log(
                logging.INFO if kind == "stale" else logging.ERROR,
                "Ignoring a record at %s[%d]@%d: %s (%d %s so far)",
                message.topic,
                message.partition,
                message.offset,
                reason,
                self.counters.internal_rejected[counted],
                kind,
            )

    def _dead_letter(self, message: Any, rejection: Rejection, outbox: Outbox) -> None:
        self.counters.dead_letters += 1
        log.debug(
            "Dead letter %s[%d]@%d: %s",
            message.topic,
            message.partition,
            message.offset,
            rejection.message,
        )
        # Keyed like the original when that key is short (so a producer's dead letters stay
        # together), never with an oversized key: the dead letter must always fit.
        key = message.key if message.key is not None and len(message.key) <= 1024 else None
        outbox.dead_letters.append(
            Outgoing(
                self.names.deadletter,
                key,
                dead_letter(
                    message.topic,
                    message.partition,
                    message.offset,
                    message.key,
                    message.value,
                    message.timestamp,
                    rejection,
                    self.now_ms(),
                    self.dead_letter_kept_bytes,
                ),
                message.partition,
            )
        )

    def _on_command(self, message: Any, states: PartitionStates, outbox: Outbox) -> None:
        command = read_command(message.value, message.partition, self.intake.partition_of)
        if isinstance(command, str):
            self._refuse_internal(message, "refused", command)
            self._dead_letter(message, Rejection("invalid_command", command), outbox)
            return
        key: bytes = command.agent_did.encode()
        state = states.get(key)
        if state is None:
            reason = f"reinstate {command.agent_did}: unknown agent (no state is created for it)"
            self._refuse_internal(message, "refused", reason)
            self._dead_letter(message, Rejection("invalid_command", reason), outbox)
            return
        outcome = apply_reinstatement(
            command.agent_did,
            state,
            message.offset,
            self.now_ms(),
            command.requested_by,
            command.reason,
            command.request_id,
        )
        if outcome.refused is not None:
            states.mark_dirty(key)  # the command's offset is recorded as applied
            log.warning("Reinstate %s refused: %s", command.agent_did, outcome.refused)
            return
        reinstatement = outcome.reinstatement or outcome.republish
        if reinstatement is None:
            return
        states.mark_dirty(key)
        log.info(
            "Reinstated %s by %s: %s",
            command.agent_did,
            reinstatement.requested_by,
            reinstatement.reason,
        )
        outbox.ordered.append(
            Outgoing(
                self.names.revocations,
                key,
                reinstatement_message(command.agent_did, reinstatement),
                message.partition,
            )
        )

    def _on_tick(
        self,
        message: Any,
        states: PartitionStates,
        schedule: PartitionSchedule,
        clock: PartitionClock,
        outbox: Outbox,
    ) -> bool:
        offset = message.offset
        partition = message.partition
        if offset <= clock.last_tick_offset:
            # Applied before, and redelivered after a crash: re-publish what it closed, whatever
            # its time (those outputs may never have reached Kafka).
            self._republish_closes(offset, partition, states, schedule, outbox)
            return False
        tick_ms = decode_tick(message.value)
        now_ms = self.now_ms()
        refusal = tick_refusal(tick_ms, now_ms, self.tick_tolerance_ms)
        if refusal is not None:
            # Behind: stale (a backlog of ticks after a stop), harmless and expected. Otherwise
            # malformed or ahead: forged, or a host with a broken clock.
            stale = tick_ms is not None and tick_ms < now_ms
            self._refuse_internal(message, "stale" if stale else "refused", refusal)
            return False
        assert tick_ms is not None
        self.counters.ticks += 1
        self.counters.tick_lag_ms = now_ms - tick_ms
        schedule.take_closed_by(offset)
        clock.last_tick_offset = offset
        clock.time_ms = max(clock.time_ms, tick_ms)
        windows = self.windows
        clock_ms = clock.time_ms
        # Closed by _close_due, in slices, once this batch is written.
        schedule.pending.extend(schedule.take_due(lambda start: windows.is_closed(start, clock_ms)))
        return True

    async def _close_due(self) -> None:
        """Close the windows that ticks found due, a time slice at a time.

        Why slices: at a window's end every agent active in it is due at once (tens of
        thousands), and closing them in one turn would hold every signal behind it; a
        revocation would wait for all of them. Between slices the lock is released, so signal
        batches take their turns. Closing later than the tick changes nothing in the result:
        a window is closed by the partition clock, which the tick already moved, and until it is
        closed its agent's later signals count as late in the window that is open.

        At most ``CLOSE_BUDGET_SECONDS`` per tick batch: what is left stays pending for the next
        one (a quarter of a second later), so a worker asked to stop is never held for the
        closes of a million agents. Pending closes survive a crash too: their windows are still
        open in the stored states, and the rebuilt schedule finds them due.
        """
        deadline = time.perf_counter() + CLOSE_BUDGET_SECONDS
        while time.perf_counter() < deadline and any(
            schedule.pending for schedule in self.schedules.values()
        ):
            async with self._turn:
                await self._close_slice()
            await asyncio.sleep(0)

    def _close_turn_seconds(self) -> float:
        """As long as the last signal batch's turn (within bounds), so that under load closing
        and signals share the worker about evenly. A fixed short slice starved closing: a signal
        batch holds the lock for tens of milliseconds, and each closing turn also waits for the
        changelog and then the outputs to be confirmed; at 15,000 signals/s over 100,000 agents
        closing fell behind by more than half, and open windows piled up in the states."""
        return min(
            CLOSE_SLICE_MAX_SECONDS, max(self.close_slice_seconds, self._signal_turn_seconds)
        )

    async def _close_slice(self) -> None:
        outbox = Outbox()
        try:
            deadline = time.perf_counter() + self._close_turn_seconds()
            config = self.config()
            for partition, schedule in list(self.schedules.items()):
                clock = self._clock_for(partition)
                states = PartitionStates(self.store, partition)
                pending = schedule.pending
                while pending and time.perf_counter() < deadline:
                    for _ in range(min(32, len(pending))):
                        self._close_agent(
                            pending.popleft(), partition, states, clock, config, outbox
                        )
                states.stage_changes()
            await self._persist_for(outbox)
            await self._publish(outbox)
        except BaseException as exc:
            self.failed = exc
            self.store.forget()
            raise

    def _close_agent(
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
        outcome = close_windows(
            agent_did, state, clock.time_ms, clock.last_tick_offset, self.windows, config
        )
        if not outcome.updates:
            return
        states.mark_dirty(key)
        self.counters.windows_closed += len(outcome.updates)
        for update in outcome.updates:
            outbox.ordered.append(
                Outgoing(self.names.scores, key, score_update_message(agent_did, update), partition)
            )
        if outcome.revocation is not None:
            self._queue_revocation(agent_did, key, outcome.revocation, partition, outbox)

    def _republish_closes(
        self,
        tick_offset: int,
        partition: int,
        states: PartitionStates,
        schedule: PartitionSchedule,
        outbox: Outbox,
    ) -> None:
        for key in schedule.take_closed_by(tick_offset):
            state = states.get(key)
            if state is None or state.last_close_tick != tick_offset:
                continue
            agent_did = key.decode()
            states.mark_dirty(key)
            for update in state.last_updates:
                self.counters.updates_republished += 1
                outbox.ordered.append(
                    Outgoing(
                        self.names.scores, key, score_update_message(agent_did, update), partition
                    )
                )
            if _revoked_by_close(state):
                assert state.revocation is not None
                outbox.ordered.append(
                    Outgoing(
                        self.names.revocations,
                        key,
                        revocation_message(
                            agent_did, state.revocation, self.names.signals, self.windows.size_ms
                        ),
                        partition,
                    )
                )

    def _queue_revocation(
        self, agent_did: str, key: bytes, revocation: Revocation, partition: int, outbox: Outbox
    ) -> None:
        self.counters.revocations += 1
        log.info("Revoking %s: %s", agent_did, revocation.reason)
        outbox.ordered.append(
            Outgoing(
                self.names.revocations,
                key,
                revocation_message(agent_did, revocation, self.names.signals, self.windows.size_ms),
                partition,
            )
        )

    async def _publish(self, outbox: Outbox) -> None:
        """Publish the batch's outputs and wait until Kafka has every one: the positions and
        tick offsets of the records behind them must not move before (see streams.delivery)."""
        if outbox.dead_letters or outbox.ordered:
            await self.delivery.send([*outbox.dead_letters, *outbox.ordered])


def _revoked_by_close(state: AgentState) -> bool:
    """The agent's standing revocation was caused by its last window close."""
    revocation = state.revocation
    return (
        revocation is not None
        and state.revoked
        and isinstance(revocation.trigger, WindowTrigger)
        and bool(state.last_updates)
        and revocation.trigger.window_start_ms == state.last_updates[-1].window_start_ms
    )
