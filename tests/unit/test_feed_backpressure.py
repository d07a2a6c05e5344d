"""Reading signals waits for a state write when too many changed states are held: a worker
behind its load keeps a bounded number of them in memory instead of reading on."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition

from streams.processing.feed import SignalFeed

TP = TopicPartition("signals.policy_compliance", 0)
BATCH = 10


@dataclass
class Record:
    offset: int


class EndlessConsumer:
    """Always has another batch of records buffered, as a consumer behind a backlog does."""

    def __init__(self) -> None:
        self.offset = 0

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        batch = [Record(self.offset + i) for i in range(BATCH)]
        self.offset += BATCH
        return {TP: batch}


class Worker:
    """Each record changes one more state; a write takes everything held, and takes time."""

    def __init__(self) -> None:
        self.held = 0
        self.most_held = 0
        self.writes = 0
        self.write_may_finish = asyncio.Event()

    async def process(self, records: Sequence[Any]) -> None:
        self.held += len(records)
        self.most_held = max(self.most_held, self.held)

    async def make_durable(self) -> None:
        taken = self.held
        await self.write_may_finish.wait()
        self.write_may_finish.clear()
        self.held -= taken
        self.writes += 1


def _feed(worker: Worker, limit: int) -> SignalFeed:
    feed = SignalFeed(
        kafka=None,  # type: ignore[arg-type]  # the consumer is put in place below
        topics=[TP.topic],
        process=worker.process,
        make_durable=worker.make_durable,
        positions=lambda partition: [0],
        batch_max=BATCH,
        fetch_bytes_per_partition=1 << 20,
        durable_interval=3600.0,  # only the limit starts a write here
        held_states=lambda: worker.held,
        max_held_states=limit,
    )
    feed._consumer = EndlessConsumer()
    feed.partitions = frozenset({0})
    feed._owned.set()
    return feed


async def test_reading_waits_for_a_write_once_the_limit_is_reached() -> None:
    worker = Worker()
    feed = _feed(worker, limit=50)
    running = asyncio.ensure_future(feed.run())
    try:
        for _ in range(5):
            await asyncio.sleep(0.05)  # the feed would read thousands of batches meanwhile
            assert worker.held == 50  # reached, and no further while the write is under way
            worker.write_may_finish.set()
            await asyncio.sleep(0)
        assert worker.writes >= 4
        assert worker.most_held <= 50 + BATCH
        assert feed.throttled >= 5
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


async def test_without_a_limit_reading_goes_on() -> None:
    worker = Worker()
    feed = _feed(worker, limit=0)
    running = asyncio.ensure_future(feed.run())
    try:
        await asyncio.sleep(0.05)
        assert worker.held > 1_000
        assert feed.throttled == 0
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
