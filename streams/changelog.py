"""Sending agent states to their changelog partition, and knowing that Kafka has them.

A state is written to RocksDB, then sent here; whatever depends on it being durable (an output it
records, the signal positions written after it) waits for :meth:`ChangelogWriter.confirm`. A batch
the broker refused is sent again with each key's *current* local value, so a retry never puts an
older value after a newer one that a later write already sent; a deleted key goes again as a
tombstone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from rocksdict import Rdict

from .delivery import Retrying, acknowledged

#: The last changelog offset a partition's database is known to contain: a restart reads only the
#: changelog after it.
PERSISTED_OFFSET_KEY = b"\x00changelog-offset"


class ChangelogWriter:
    def __init__(
        self,
        topic: str,
        producer: Callable[[], Any],
        retrying: Retrying,
        db_of: Callable[[int], Rdict],
    ) -> None:
        self.topic = topic
        #: The AIOKafkaProducer to send with (created late: it binds the event loop).
        self._producer = producer
        self.retrying = retrying
        self._db_of = db_of
        # Batches sent and not yet known to be stored: (future, partition, keys).
        self._unconfirmed: list[tuple[asyncio.Future[Any], int, list[bytes]]] = []
        self._confirming = asyncio.Lock()

    async def send(self, partition: int, items: Sequence[tuple[bytes, bytes | None]]) -> None:
        """Send ``items`` in order, in as few producer batches as fit; returns once queued."""
        producer = self._producer()
        db = self._db_of(partition)
        builder = producer.create_batch()
        keys: list[bytes] = []
        for key, value in items:
            if builder.append(key=key, value=value, timestamp=None) is None:
                await self._queue(producer, builder, partition, db, keys)
                builder = producer.create_batch()
                keys = []
                builder.append(key=key, value=value, timestamp=None)
            keys.append(key)
        await self._queue(producer, builder, partition, db, keys)

    async def _queue(
        self, producer: Any, builder: Any, partition: int, db: Rdict, keys: list[bytes]
    ) -> None:
        future = await producer.send_batch(builder, self.topic, partition=partition)
        _remember_offset(future, db, len(keys))
        self._unconfirmed.append((future, partition, keys))

    async def confirm(self) -> None:
        """Return once the changelog holds every record sent before this call.

        One confirmation at a time: a caller that arrives while another confirms waits for it,
        since that one may have taken (and be retrying) the caller's own records.
        """
        async with self._confirming:
            entries, self._unconfirmed = self._unconfirmed, []
            while entries:
                results = await acknowledged(
                    [f for f, _, _ in entries],
                    lambda seconds, _: self.retrying.stalled(self.topic, seconds),
                )
                failed: dict[int, list[bytes]] = {}
                error: BaseException | None = None
                for (_, partition, keys), result in zip(entries, results, strict=True):
                    if isinstance(result, asyncio.CancelledError):
                        raise result
                    if isinstance(result, BaseException):
                        failed.setdefault(partition, []).extend(keys)
                        error = result
                if error is None:
                    self.retrying.recovered(self.topic)
                    return
                await self.retrying.failed(self.topic, error)
                for partition, keys in failed.items():
                    db = self._db_of(partition)
                    await self.send(partition, [(key, db.get(key)) for key in dict.fromkeys(keys)])
                entries, self._unconfirmed = self._unconfirmed, []


def _remember_offset(future: asyncio.Future[Any], db: Rdict, count: int) -> None:
    """Once a batch is stored by Kafka, record its last offset as the database's persisted
    offset, so a restart replays only the changelog written after it."""

    def done(f: asyncio.Future[Any]) -> None:
        if not f.cancelled() and f.exception() is None:
            db[PERSISTED_OFFSET_KEY] = str(f.result().offset + count - 1).encode()

    future.add_done_callback(done)
