"""Signals read by a plain aiokafka consumer, for exactly the partitions Faust assigned this worker.

Why not through Faust: Faust's per-record machinery (the consumer thread hand-off, a task per
record in its stream iterator, per-record acknowledgements) costs several times more than scoring a
signal; measured, a worker fed by Faust applied about 5,000 signals/s while aiokafka alone reads
600,000/s. Signals are the volume, so they bypass it; ticks and commands, a few records a second,
stay on Faust's stream, and Faust's consumer group still decides which worker owns which partition
(and restores the state table's partitions before they are used).

How ownership follows Faust:
- a partition is fed once Faust reports the rebalance complete (its table partition restored);
- on revocation, the batch in flight finishes, staged states are written and the producer
  flushed (the state is durable in the changelog) and the partition's position is committed,
  before Faust hands it to another worker.

Positions are committed to their own consumer group (``<app id>-signals``), which has no members:
the feed assigns partitions itself. Commits happen after the state is durable, at most every
``commit_interval`` seconds, so a crash replays at most that much; replayed signals are recognised
by the per-agent applied offsets and change nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

log = logging.getLogger(__name__)

ProcessRecords = Callable[[Sequence[Any]], Awaitable[None]]
MakeDurable = Callable[[], Awaitable[None]]


class SignalFeed:
    def __init__(
        self,
        *,
        bootstrap_servers: str,
        group_id: str,
        topics: Sequence[str],
        process: ProcessRecords,
        make_durable: MakeDurable,
        batch_max: int,
        fetch_bytes_per_partition: int,
        commit_interval: float = 1.0,
    ) -> None:
        self.topics = list(topics)
        self._process = process
        self._make_durable = make_durable
        self._batch_max = batch_max
        self._commit_interval = commit_interval
        self._consumer_options: dict[str, Any] = {
            "bootstrap_servers": bootstrap_servers,
            "group_id": group_id,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "max_partition_fetch_bytes": fetch_bytes_per_partition,
            # Only records of committed transactions: a producer that aborts never scored.
            "isolation_level": "read_committed",
        }
        # Created in start(): aiokafka binds its consumer to the running event loop.
        self._consumer: Any = None
        #: Partition numbers fed now (every signal topic's partition of that number).
        self.partitions: frozenset[int] = frozenset()
        #: Next offset to commit per topic-partition: one past the last record processed.
        self._positions: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._last_commit = time.monotonic()
        # Held while a batch is processed and while ownership changes: a partition is never
        # given up with a batch of it half done.
        self._turn = asyncio.Lock()
        self._owned = asyncio.Event()
        self._started = False

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(**self._consumer_options)
        await self._consumer.start()
        if self.partitions:  # owned before the consumer existed
            self._consumer.assign(sorted(self._tps(self.partitions)))
        self._started = True

    async def stop(self) -> None:
        if not self._started:
            return
        async with self._turn:
            try:
                await self._commit()
            except Exception as exc:  # stopping anyway: the next owner replays from the last commit
                log.warning("Final commit of signal positions skipped: %s", exc)
            self._started = False
        await self._consumer.stop()

    def _tps(self, partitions: Iterable[int]) -> set[TopicPartition]:
        return {TopicPartition(t, p) for t in self.topics for p in partitions}

    async def own(self, partitions: Iterable[int]) -> None:
        """Feed exactly ``partitions`` from now on (Faust's assignment, once restored)."""
        wanted = frozenset(partitions)
        async with self._turn:
            if wanted == self.partitions:
                return
            # Reassigning restarts every partition at its committed offset: commit first.
            await self._commit()
            self._forget(self.partitions - wanted)
            self.partitions = wanted
            # aiokafka starts each newly assigned partition at the group's committed offset.
            if self._consumer is not None:
                self._consumer.assign(sorted(self._tps(wanted)))
            if wanted:
                self._owned.set()
            else:
                self._owned.clear()
            log.info("Feeding signals of partitions %s", sorted(wanted))

    async def release(self, partitions: Iterable[int]) -> None:
        """Stop feeding ``partitions`` (revoked by Faust), committing what was processed."""
        async with self._turn:
            gone = self.partitions & frozenset(partitions)
            if not gone:
                return
            await self._commit()
            self._forget(gone)
            self.partitions = self.partitions - gone
            if self._consumer is not None:
                self._consumer.assign(sorted(self._tps(self.partitions)))
            if not self.partitions:
                self._owned.clear()

    def _forget(self, partitions: frozenset[int]) -> None:
        for tp in self._tps(partitions):
            self._positions.pop(tp, None)
            self._committed.pop(tp, None)

    async def _commit(self) -> None:
        committed = self._committed
        due = {tp: at for tp, at in self._positions.items() if committed.get(tp) != at}
        self._last_commit = time.monotonic()
        if not due:
            return
        # The changelog first: a committed position must never be ahead of the state it led to.
        await self._make_durable()
        assert self._consumer is not None  # positions exist only once records were fetched
        await self._consumer.commit(due)
        self._committed.update(due)

    async def run(self) -> None:
        consumer = self._consumer
        while True:
            await self._owned.wait()
            try:
                fetched = await consumer.getmany(timeout_ms=200, max_records=self._batch_max)
            except KafkaError as exc:
                log.warning("Fetching signals failed (%s); retrying", exc)
                await asyncio.sleep(0.5)
                continue
            async with self._turn:
                owned = self.partitions
                records: list[Any] = []
                last: dict[TopicPartition, int] = {}
                for tp, batch in fetched.items():
                    # Fetched before a revocation completed: another worker owns these now.
                    if tp.partition not in owned or not batch:
                        continue
                    records.extend(batch)
                    last[tp] = batch[-1].offset + 1
                if records:
                    await self._process(records)
                    self._positions.update(last)
                if time.monotonic() - self._last_commit >= self._commit_interval:
                    await self._commit()

    def lag(self) -> dict[TopicPartition, int]:
        """Records not yet processed per fed topic-partition (as of the last fetch)."""
        lag: dict[TopicPartition, int] = {}
        if self._consumer is None:
            return lag
        for tp in self._consumer.assignment():
            highwater = self._consumer.highwater(tp)
            position = self._positions.get(tp, self._committed.get(tp))
            if highwater is None or position is None:
                continue
            lag[tp] = max(0, highwater - position)
        return lag
