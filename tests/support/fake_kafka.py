"""In-memory stand-ins for the little of aiokafka and Faust that unit tests of the pipeline use.

Only for unit tests of pure logic; anything about Kafka's own behaviour is tested against the
real broker (tests/integration).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any


class Metadata:
    """What a delivered record's future resolves to (aiokafka's RecordMetadata, in part)."""

    def __init__(self, offset: int) -> None:
        self.offset = offset


class FakeBatch:
    """aiokafka's batch builder, as the state store fills it."""

    def __init__(self) -> None:
        self.rows: list[tuple[Any, Any]] = []
        self.closed = False

    def append(self, *, key: Any, value: Any, timestamp: Any) -> object | None:
        if self.closed:
            return None  # as aiokafka's: a closed batch takes nothing more
        self.rows.append((key, value))
        return object()

    def close(self) -> None:
        self.closed = True


class FakeProducer:
    """Stores what it is sent, in order, with the offsets a partition would give it; refuses
    records while their topic is in ``refusing`` (like a broker that rejects them), or at send
    time while ``refuse_at_send`` is set (like aiokafka's size check)."""

    def __init__(self) -> None:
        #: (topic, key, value, partition) of every record stored.
        self.stored: list[tuple[str, bytes | None, bytes | None, int]] = []
        self.refusing: dict[str, BaseException] = {}
        self.refuse_at_send: BaseException | None = None
        self.offsets: dict[tuple[str, int], int] = {}
        #: Every batch given to send_batch, in order.
        self.batches: list[FakeBatch] = []

    def _future(
        self, topic: str, partition: int, rows: list[tuple[Any, Any]]
    ) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        error = self.refusing.get(topic)
        if error is not None:
            future.set_exception(error)
            return future
        first = self.offsets.get((topic, partition), 0)
        for key, value in rows:
            self.stored.append((topic, key, value, partition))
        self.offsets[(topic, partition)] = first + len(rows)
        future.set_result(Metadata(first))
        return future

    async def send(
        self, topic: str, value: bytes | None, *, key: bytes | None, partition: int
    ) -> asyncio.Future[Any]:
        if self.refuse_at_send is not None:
            raise self.refuse_at_send
        return self._future(topic, partition, [(key, value)])

    def create_batch(self) -> FakeBatch:
        return FakeBatch()

    async def send_batch(
        self, batch: FakeBatch, topic: str, *, partition: int
    ) -> asyncio.Future[Any]:
        self.batches.append(batch)
        return self._future(topic, partition, batch.rows)

    def on(self, topic: str) -> list[tuple[bytes | None, bytes | None, int]]:
        """(key, value, partition) of the records stored on ``topic``, in order."""
        return [(k, v, p) for t, k, v, p in self.stored if t == topic]


@dataclass(frozen=True, slots=True)
class FakeMessage:
    """A Faust message, as the pipeline reads it (its timestamp in seconds, as Faust keeps it)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float


@dataclass(frozen=True, slots=True)
class FakeEvent:
    """A Faust event: the pipeline only reads its message."""

    message: FakeMessage
