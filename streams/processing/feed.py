"""Signals read by the worker's own reader (:mod:`streams.kafka.signalreader`), for exactly the
partitions Faust assigned this worker.

Why not through Faust: Faust's per-record machinery (the consumer thread hand-off, a task per
record in its stream iterator, per-record acknowledgements) costs several times more than scoring a
signal; measured, a worker fed by Faust applied about 5,000 signals/s while aiokafka alone reads
600,000/s. Signals are the volume, so they bypass it; ticks and commands, a few records a second,
stay on Faust's stream, and Faust's consumer group still decides which worker owns which partition
(and restores the state table's partitions before they are used).

How ownership follows Faust:
- a partition is fed once its state is restored (after Faust reports the rebalance complete);
- on revocation, the batch in flight finishes and the state is made durable before Faust hands
  the partition to another worker.

There is no consumer group and no offset commit: where to resume reading is stored with the
agent states, in the same database and changelog partition, written after the states it led to
(see ``SIGNAL_POSITIONS_KEY`` in :mod:`streams.state.store`). A new owner resumes exactly where
the state it restored left off; records replayed after a crash are recognised by the per-agent
applied offsets and change nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from aiokafka import TopicPartition

from streams.kafka.clients import Connectable
from streams.kafka.signalreader import SignalReader
from streams.processing.merge import SignalMerge

log = logging.getLogger(__name__)

ProcessRecords = Callable[[Sequence[Any]], Awaitable[None]]
MakeDurable = Callable[[], Awaitable[None]]
Positions = Callable[[int], list[int]]
HeldStates = Callable[[], int]
#: How often a throttled feed looks again at how many changed states are held.
THROTTLE_POLL_S = 0.005
#: Longest a fetch waits for records when nothing is held for a time.
FETCH_WAIT_MS = 200
#: Records fetched per round, in batches: more than a round applies, so that the merge holds
#: what is waiting and a critical signal in it can be taken ahead (streams.processing.ahead)
#: rather than sit unseen in the consumer's buffer behind a backlog.
FETCH_BATCHES = 4


class SignalFeed:
    def __init__(
        self,
        *,
        kafka: Connectable,
        topics: Sequence[str],
        process: ProcessRecords,
        make_durable: MakeDurable,
        positions: Positions,
        batch_max: int,
        fetch_bytes_per_partition: int,
        durable_interval: float = 1.0,
        held_states: HeldStates = lambda: 0,
        max_held_states: int = 0,
        merge: SignalMerge | None = None,
    ) -> None:
        self.topics = list(topics)
        #: Records read and not applied yet (the pipeline's): told what is caught up, emptied
        #: whenever reading starts again from the stored positions.
        self._merge = merge
        if merge is not None:
            merge.caught_up = self.caught_up
        #: Records one topic-partition may have waiting in the merge before its fetching pauses
        #: (a topic far ahead of the others in time would otherwise fill memory).
        self._queue_limit = 4 * batch_max
        self._process = process
        self._make_durable = make_durable
        self._positions_of = positions
        self._batch_max = batch_max
        self._durable_interval = durable_interval
        self._held_states = held_states
        #: Changed states not yet written, beyond which no more signals are read until a write
        #: has taken enough of them (0: no limit). Without it a worker behind its load (more
        #: signals than it writes states for in a flush interval) holds ever more in memory.
        self._max_held_states = max_held_states
        self._kafka = kafka
        self._fetch_bytes = fetch_bytes_per_partition
        # Created in start(), on the running event loop. It reads committed records only, as
        # every reader of the service: a producer that aborts is never scored.
        self._consumer: Any = None
        #: Partition numbers fed now (every signal topic's partition of that number).
        self.partitions: frozenset[int] = frozenset()
        self._last_durable = time.monotonic()
        # Held while a batch is processed and while ownership changes: a partition is never
        # given up with a batch of it half done.
        self._turn = asyncio.Lock()
        self._owned = asyncio.Event()
        self._durable_task: asyncio.Future[None] | None = None
        #: Times reading waited for a write because too many changed states were held.
        self.throttled = 0

    async def start(self) -> None:
        consumer = SignalReader(self._kafka, partition_bytes=self._fetch_bytes)
        await consumer.start()
        async with self._turn:
            # Only a started consumer is visible: own() may run while this one starts.
            self._consumer = consumer
            if self.partitions:  # owned before the consumer existed
                self._assign(self.partitions)

    async def stop(self) -> None:
        if self._consumer is None:
            return
        async with self._turn:
            try:
                # Bounded: skipping it costs a replay on restart, never a signal (the positions
                # are stored with the states they led to).
                async with asyncio.timeout(10):
                    if self._durable_task is not None:
                        await self._durable_task
                    await self._make_durable()
            except Exception as exc:  # stopping anyway: the next owner replays what was lost
                log.warning("Final write of staged state skipped: %s", exc)
            consumer, self._consumer = self._consumer, None
        await consumer.stop()

    def _assign(self, partitions: frozenset[int]) -> None:
        """Read exactly ``partitions``, each from the position stored with its states."""
        consumer = self._consumer
        tps = sorted(TopicPartition(t, p) for t in self.topics for p in partitions)
        consumer.assign(tps)
        if self._merge is not None:
            # Everything is read again from the positions below: what was held comes back.
            self._merge.forget()
        for partition in partitions:
            for topic, offset in zip(self.topics, self._positions_of(partition), strict=True):
                if offset > 0:
                    consumer.seek(TopicPartition(topic, partition), offset)
                # else: from the earliest record kept (auto_offset_reset)

    async def own(self, partitions: Iterable[int]) -> None:
        """Feed exactly ``partitions`` from now on (Faust's assignment, once restored)."""
        wanted = frozenset(partitions)
        async with self._turn:
            if wanted == self.partitions:
                return
            self.partitions = wanted
            if self._consumer is not None:
                self._assign(wanted)
            if wanted:
                self._owned.set()
            else:
                self._owned.clear()
            log.info("Feeding signals of partitions %s", sorted(wanted))

    async def release(self, partitions: Iterable[int]) -> None:
        """Stop feeding ``partitions`` (revoked by Faust), once the batch in flight is done."""
        async with self._turn:
            gone = self.partitions & frozenset(partitions)
            if not gone:
                return
            self.partitions = self.partitions - gone
            if self._consumer is not None:
                self._assign(self.partitions)
            if not self.partitions:
                self._owned.clear()

    async def run(self) -> None:
        while True:
            await self._owned.wait()
            consumer = self._consumer
            if consumer is None:
                return  # stopped (see stop): what it held is written
            # Failures the reader cannot wait out (it retries broker outages itself) raise here
            # and stop the worker.
            fetched = await consumer.getmany(
                timeout_ms=self._fetch_wait_ms(), max_records=FETCH_BATCHES * self._batch_max
            )
            async with self._turn:
                if self._consumer is None:
                    return  # stopped while fetching
                owned = self.partitions
                records: list[Any] = []
                for tp, batch in fetched.items():
                    # Fetched before a revocation completed: another worker owns these now.
                    if tp.partition in owned:
                        records.extend(batch)
                if records or self._held():
                    await self._process(records)
                    self._pause_full_queues()
            # Let the rest of the worker run: with records already buffered, neither the fetch
            # nor the processing needs to wait, and a backlog would otherwise hold the event
            # loop (ticks, HTTP, outputs) until it is drained.
            await asyncio.sleep(0)
            # Staged states are written at least this often, in the background: the writing
            # goes in slices, and the next batches run in between.
            task = self._durable_task
            if task is not None and task.done():
                self._durable_task = None
                task.result()  # a failed write stops the feed (and the worker)
            over = 0 < self._max_held_states <= self._held_states()
            if self._durable_task is None and (
                over or time.monotonic() - self._last_durable >= self._durable_interval
            ):
                self._last_durable = time.monotonic()
                self._durable_task = asyncio.ensure_future(self._make_durable())
            if over and self._durable_task is not None:
                # Wait only until the write has taken enough of them (it takes them a slice at a
                # time), not for all of it: reading and writing still overlap.
                self.throttled += 1
                task = self._durable_task
                while self._held_states() >= self._max_held_states:
                    finished, _ = await asyncio.wait({task}, timeout=THROTTLE_POLL_S)
                    if finished:
                        break

    def _held(self) -> bool:
        return self._merge is not None and self._merge.next_release_ms is not None

    def _fetch_wait_ms(self) -> int:
        """As long as nothing held may go, and no longer."""
        release_at = None if self._merge is None else self._merge.next_release_ms
        if release_at is None:
            return FETCH_WAIT_MS
        return max(0, min(FETCH_WAIT_MS, release_at - time.time_ns() // 1_000_000))

    def _pause_full_queues(self) -> None:
        merge, consumer = self._merge, self._consumer
        if merge is None or consumer is None:
            return
        paused = consumer.paused()
        for dimension, topic in enumerate(self.topics):
            for partition in self.partitions:
                tp = TopicPartition(topic, partition)
                queued = merge.queued(dimension, partition)
                if queued > self._queue_limit and tp not in paused:
                    consumer.pause(tp)
                elif queued <= self._queue_limit // 2 and tp in paused:
                    consumer.resume(tp)

    def caught_up(self, dimension: int, partition: int) -> bool:
        """Nothing more to read on that signal topic-partition, as of the last fetch."""
        consumer = self._consumer
        if consumer is None:
            return False
        tp = TopicPartition(self.topics[dimension], partition)
        end = consumer.last_stable_offset(tp)
        if end is None or end < 0:
            end = consumer.highwater(tp)
        position = consumer.position(tp)
        return end is not None and position is not None and position >= end

    def lag(self) -> dict[TopicPartition, int]:
        """Records not yet processed per fed topic-partition (as of the last fetch)."""
        lag: dict[TopicPartition, int] = {}
        consumer = self._consumer
        if consumer is None:
            return lag
        dimension = {topic: i for i, topic in enumerate(self.topics)}
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            # The pipeline's positions: one past the last record processed (0: none yet).
            position = self._positions_of(tp.partition)[dimension[tp.topic]]
            if highwater is None or position == 0:
                continue
            lag[tp] = max(0, highwater - position)
        return lag
