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

Sending never waits for the producer: a write is queued, and one task hands the queue to the
producer in order. Why: aiokafka takes a partition's next batch only once the one before has gone
out in a request, and a worker on one broker has one request in flight at a time, so handing over
a checkpoint's slice waited for round trips (measured at half load: slices held the worker's turn
for 17 ms typically and 450 ms at worst, and a revocation waited behind them). In order, because a
partition's records must reach the changelog in the order their values were written.
"""

from __future__ import annotations

import asyncio
from collections import deque
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


@dataclass(slots=True)
class _Queued:
    """One send, not yet handed to the producer."""

    partition: int
    items: Sequence[Item]
    send: int
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
        # Sends not yet handed to the producer, in order, and the task handing them over.
        self._queue: deque[_Queued] = deque()
        self._handing: asyncio.Task[None] | None = None
        #: The last send handed over whole (sends are handed over in the order of their numbers).
        self._handed = 0
        self._handed_waiters: list[tuple[int, asyncio.Future[None]]] = []
        #: Why handing over failed (the producer refused a batch outright): every later send and
        #: confirmation raises it, so nothing that depends on the lost records goes ahead.
        self._hand_over_failed: BaseException | None = None

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
        """Send ``items`` in order (after every send before), in as few producer batches as fit.

        Returns at once: they are readable through :meth:`pending` from now on, and
        :meth:`confirm` waits until they are handed over and stored."""
        self._enqueue(partition, items)

    def _enqueue(self, partition: int, items: Sequence[Item]) -> None:
        if self._hand_over_failed is not None:
            raise self._hand_over_failed
        if not items:
            return
        self._sends += 1
        send = self._sends
        # Taken now: a partition given up while this send waits in the queue must not have the
        # batch written locally once it confirms.
        generation = self._generation.get(partition, 0)
        pending = self._pending.setdefault(partition, {})
        for key, value in items:
            pending[key] = (send, value)
        self._queue.append(_Queued(partition, items, send, generation))
        if self._handing is None:
            self._handing = asyncio.ensure_future(self._hand_over())
            self._handing.add_done_callback(self._handing_done)

    async def _hand_over(self) -> None:
        """Hand the queued sends to the producer, in order, until the queue is empty."""
        queue = self._queue
        while queue:
            queued = queue[0]
            producer = self._producer()
            builder = producer.create_batch()
            batch: list[Item] = []
            for key, value in queued.items:
                if builder.append(key=key, value=value, timestamp=None) is None:
                    await self._queue_batch(producer, builder, queued, batch)
                    builder = producer.create_batch()
                    batch = []
                    builder.append(key=key, value=value, timestamp=None)
                batch.append((key, value))
            await self._queue_batch(producer, builder, queued, batch)
            queue.popleft()
            self._handed = queued.send
            self._wake_handed()
        # Here, not in the done callback: a send queued before that runs would find a task
        # still set and wait for nobody.
        self._handing = None

    def _handing_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            error: BaseException | None = asyncio.CancelledError(
                "the changelog's hand-over was cancelled"
            )
        else:
            error = task.exception()
        if error is not None:
            self._handing = None
            self._hand_over_failed = error
            self._queue.clear()
            self._wake_handed()

    def _wake_handed(self) -> None:
        waiting = []
        for through, future in self._handed_waiters:
            if future.done():
                continue
            if self._hand_over_failed is not None:
                future.set_exception(self._hand_over_failed)
            elif self._handed >= through:
                future.set_result(None)
            else:
                waiting.append((through, future))
        self._handed_waiters = waiting

    async def room(self) -> None:
        """Return once at most one send waits to be handed over (see Durability.checkpoint)."""
        await self._handed_over(self._sends - 1)

    async def _handed_over(self, through: int) -> None:
        """Return once every send up to number ``through`` is handed to the producer."""
        if self._hand_over_failed is not None:
            raise self._hand_over_failed
        if self._handed >= through:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._handed_waiters.append((through, future))
        await future

    async def _queue_batch(
        self, producer: Any, builder: Any, queued: _Queued, items: list[Item]
    ) -> None:
        # Closed, the batch goes at once: the producer holds an open one for its linger time in
        # case more records join it, and none ever will (measured: 5 ms on every confirm, a
        # revocation's included).
        builder.close()
        future = await producer.send_batch(builder, self.topic, partition=queued.partition)
        self._unconfirmed.append(
            _Sent(future, queued.partition, items, queued.send, queued.generation)
        )

    async def confirm(self) -> None:
        """Return once the changelog holds every record sent before this call, and the local
        database has each of them.

        One confirmation at a time: a caller that arrives while another confirms waits for it,
        since that one may have taken (and be retrying) the caller's own records.
        """
        async with self._confirming:
            await self._handed_over(self._sends)
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
                    self._enqueue(
                        partition,
                        [(key, self._newest(partition, key)) for key in dict.fromkeys(keys)],
                    )
                await self._handed_over(self._sends)
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
