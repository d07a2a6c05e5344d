"""Agent states go to their changelog partition first, and into the local database only once Kafka
has them.

Why this order: the local database is a copy of the changelog. If it could hold a state the
changelog never got (a crash between the two writes), the worker restarting on it would resume
from positions the changelog lacks, and a later owner restoring from the changelog would get older
states with those newer positions: the signals in between lost. So a write is sent here and held in
memory (readable through :meth:`ChangelogWriter.pending`) until Kafka confirms it; only then is it
written locally, in the order it was sent, with the changelog offset it reaches. The database is
always a prefix of its changelog partition, and a restart reads the changelog after that offset.

Whatever depends on a state being durable (an output it records, the signal positions written
after it) waits for :meth:`ChangelogWriter.confirm`. A batch the broker refused is sent again with
each key's newest value, so a retry never puts an older value after a newer one that a later write
already sent; a deleted key goes again as a tombstone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from rocksdict import Rdict, WriteBatch

from streams.kafka.delivery import Retrying, acknowledged

#: The last changelog offset a partition's database is known to contain: a restart reads only the
#: changelog after it.
PERSISTED_OFFSET_KEY = b"\x00changelog-offset"

#: A value to write, or None to delete the key.
Item = tuple[bytes, bytes | None]


@dataclass(slots=True)
class _Sent:
    """One producer batch on its way: what it holds, and which send it was part of."""

    future: asyncio.Future[Any]
    partition: int
    items: list[Item]
    send: int
    #: The partition's ownership generation when sent (see ChangelogWriter.drop).
    generation: int


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
        # Batches sent and not yet known to be stored, in the order they were sent.
        self._unconfirmed: list[_Sent] = []
        # Per partition, the newest value sent for each key and not yet written locally, with
        # the number of the send it went with.
        self._pending: dict[int, dict[bytes, tuple[int, bytes | None]]] = {}
        self._sends = 0
        # Bumped when a partition is given up: batches sent before are no business of the local
        # database any more (it may be wiped, or restored past them, by the time they confirm).
        self._generation: dict[int, int] = {}
        self._confirming = asyncio.Lock()

    # -- what is sent and not yet stored locally -----------------------------------------------

    def pending(self, partition: int, key: bytes) -> tuple[bool, bytes | None]:
        """(True, the newest value sent) for a key not yet written locally (a None value: the
        key is deleted); (False, None) when the local database has the key's latest value."""
        pending = self._pending.get(partition)
        held = None if pending is None else pending.get(key)
        return (False, None) if held is None else (True, held[1])

    def pending_items(self, partition: int) -> list[Item]:
        return [(key, value) for key, (_, value) in self._pending.get(partition, {}).items()]

    def drop(self, partitions: Iterable[int]) -> None:
        """Forget what is pending for partitions given up: their next owner restores from the
        changelog, which has these values or not; this worker reads them no more."""
        for partition in partitions:
            self._pending.pop(partition, None)
            self._generation[partition] = self._generation.get(partition, 0) + 1

    # -- sending and confirming ----------------------------------------------------------------

    async def send(self, partition: int, items: Sequence[Item]) -> None:
        """Send ``items`` in order, in as few producer batches as fit; returns once queued."""
        if not items:
            return
        self._sends += 1
        send = self._sends
        # Taken now: a partition given up while this send waits for buffer space must not have
        # the batch written locally once it confirms.
        generation = self._generation.get(partition, 0)
        pending = self._pending.setdefault(partition, {})
        for key, value in items:
            pending[key] = (send, value)
        producer = self._producer()
        builder = producer.create_batch()
        batch: list[Item] = []
        for key, value in items:
            if builder.append(key=key, value=value, timestamp=None) is None:
                await self._queue(producer, builder, partition, batch, send, generation)
                builder = producer.create_batch()
                batch = []
                builder.append(key=key, value=value, timestamp=None)
            batch.append((key, value))
        await self._queue(producer, builder, partition, batch, send, generation)

    async def _queue(
        self,
        producer: Any,
        builder: Any,
        partition: int,
        items: list[Item],
        send: int,
        generation: int,
    ) -> None:
        # Closed, the batch goes at once: the producer holds an open one for its linger time in
        # case more records join it, and none ever will (measured: 5 ms on every confirm, a
        # revocation's included).
        builder.close()
        future = await producer.send_batch(builder, self.topic, partition=partition)
        self._unconfirmed.append(_Sent(future, partition, items, send, generation))

    async def confirm(self) -> None:
        """Return once the changelog holds every record sent before this call, and the local
        database has each of them.

        One confirmation at a time: a caller that arrives while another confirms waits for it,
        since that one may have taken (and be retrying) the caller's own records.
        """
        async with self._confirming:
            entries, self._unconfirmed = self._unconfirmed, []
            while entries:
                results = await acknowledged(
                    [entry.future for entry in entries],
                    lambda seconds, _: self.retrying.stalled(self.topic, seconds),
                )
                failed: dict[int, list[bytes]] = {}
                error: BaseException | None = None
                for entry, result in zip(entries, results, strict=True):
                    if isinstance(result, asyncio.CancelledError):
                        raise result
                    if isinstance(result, BaseException):
                        failed.setdefault(entry.partition, []).extend(k for k, _ in entry.items)
                        error = result
                    else:
                        self._store_locally(entry, result.offset)
                if error is None:
                    self.retrying.recovered(self.topic)
                    return
                await self.retrying.failed(self.topic, error)
                for partition, keys in failed.items():
                    await self.send(
                        partition,
                        [(key, self._newest(partition, key)) for key in dict.fromkeys(keys)],
                    )
                entries, self._unconfirmed = self._unconfirmed, []

    def _newest(self, partition: int, key: bytes) -> bytes | None:
        found, value = self.pending(partition, key)
        if found:
            return value
        stored: bytes | None = self._db_of(partition).get(key)
        return stored

    def _store_locally(self, entry: _Sent, base_offset: int) -> None:
        """Write a confirmed batch into the local database, with the offset it reaches; and stop
        holding the values it wrote (unless a newer one was sent since)."""
        if entry.generation != self._generation.get(entry.partition, 0):
            return  # sent before the partition was given up
        batch = WriteBatch(raw_mode=True)
        for key, value in entry.items:
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        last_offset = base_offset + len(entry.items) - 1
        batch.put(PERSISTED_OFFSET_KEY, str(last_offset).encode())
        self._db_of(entry.partition).write(batch)
        pending = self._pending.get(entry.partition, {})
        for key, _ in entry.items:
            held = pending.get(key)
            if held is not None and held[0] <= entry.send:
                del pending[key]
