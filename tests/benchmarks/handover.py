"""When each probe's record was there for a plain consumer to read: the broker's and the machine's
part of a revocation's latency, told apart from the worker's.

A revocation's latency runs from just before its critical signal is produced until the
revocation arrives. Part of that is Kafka's (the produce, the broker's append, the fetch that
brings the record) and part is the worker's (taking the record from its consumer, applying it,
confirming its state, sending the revocation). A consumer that does nothing else, in a process of
its own so that neither the worker nor the measuring process delays it, reads the probe topic
beside the worker and stamps each probe's record as it arrives: its delay after the record's
timestamp (set by the producer as it sends) is what a consumer free to read at once waits.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from multiprocessing import get_context
from multiprocessing.connection import Connection

from aiokafka import AIOKafkaConsumer, TopicPartition

#: How long one fetch may wait at the broker for records: short, so that the watcher's own
#: cadence adds little to what it measures.
FETCH_MAX_WAIT_MS = 10


def watch(
    bootstrap: str,
    topic: str,
    partitions: int,
    keys: Sequence[bytes],
    seconds: float,
    conn: Connection,
) -> None:
    """In a process of its own: read ``topic`` from where it ends now until every key in
    ``keys`` has arrived or ``seconds`` have passed; send "ready" once placed there, then
    {key: ms after the record's timestamp that it arrived here} for the first record of each."""

    async def run() -> dict[bytes, float]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        )
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_end(*tps)
            for tp in tps:
                await consumer.position(tp)  # the end as of now, before any probe is sent
            wanted = set(keys)
            delays: dict[bytes, float] = {}
            deadline = time.monotonic() + seconds
            conn.send("ready")
            while wanted and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=100)
                now_ms = time.time() * 1000
                for records in batches.values():
                    for record in records:
                        if record.key in wanted:
                            wanted.discard(record.key)
                            delays[record.key] = now_ms - record.timestamp
            return delays
        finally:
            await consumer.stop()

    conn.send(asyncio.run(run()))


class HandoverWatch:
    """:func:`watch` in a spawned process: :meth:`start` returns once it is reading."""

    def __init__(
        self, bootstrap: str, topic: str, partitions: int, keys: Sequence[bytes], seconds: float
    ) -> None:
        context = get_context("spawn")
        self._conn, self._child = context.Pipe(duplex=False)
        self._process = context.Process(
            target=watch,
            args=(bootstrap, topic, partitions, list(keys), seconds, self._child),
            daemon=True,
        )

    async def start(self) -> None:
        self._process.start()
        self._child.close()
        ready = await asyncio.to_thread(self._conn.recv)
        if ready != "ready":
            raise RuntimeError(f"the hand-over watcher did not start: {ready!r}")

    async def result(self) -> dict[bytes, float]:
        """{probe key: ms from its record's timestamp until a plain consumer had it}."""
        try:
            delays: dict[bytes, float] = await asyncio.to_thread(self._conn.recv)
        finally:
            await asyncio.to_thread(self._process.join, 10)
        return delays
