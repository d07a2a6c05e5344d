"""Producing and consuming in tests, always against a deadline and never with sleeps.

Every wait fails with a message that says what was expected, what arrived, and whether the broker
still answers, so a dead broker reads as a dead broker and not as a hang or a vague timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError
from aiokafka.structs import RecordMetadata

from .broker import reachable


def unique_name(stem: str) -> str:
    return f"{stem}-{uuid.uuid4().hex[:10]}"


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int

    def json(self) -> dict:  # type: ignore[type-arg]
        assert self.value is not None
        return orjson.loads(self.value)


class DeadlineExceeded(AssertionError):
    pass


async def create_topics(bootstrap: str, topics: Sequence[str], partitions: int = 1) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, partitions, 1) for t in topics])
    finally:
        await admin.close()


def producer(bootstrap: str, **overrides: object) -> AIOKafkaProducer:
    options: dict[str, object] = {
        "bootstrap_servers": bootstrap,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "request_timeout_ms": 10000,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


async def produce(
    bootstrap: str,
    records: Iterable[tuple[str, bytes | None, bytes | None]],
    *,
    partition_of: Callable[[str, bytes | None], int | None] | None = None,
) -> list[tuple[str, int, int]]:
    """Send (topic, key, value) records, wait for every ack; (topic, partition, offset) of each."""
    placed: list[tuple[str, int, int]] = []
    async with producer(bootstrap, max_request_size=4 * 1024 * 1024) as p:
        futures = []
        for topic, key, value in records:
            partition = partition_of(topic, key) if partition_of else None
            futures.append(await p.send(topic, value=value, key=key, partition=partition))
            if len(futures) >= 5000:
                placed.extend(_positions(await asyncio.gather(*futures)))
                futures.clear()
        placed.extend(_positions(await asyncio.gather(*futures)))
    return placed


def _positions(metadata: Iterable[RecordMetadata]) -> list[tuple[str, int, int]]:
    return [(m.topic, m.partition, m.offset) for m in metadata]


async def consume(
    bootstrap: str,
    topics: Sequence[str],
    *,
    until: Callable[[list[Record]], bool],
    timeout: float,
    what: str,
    from_beginning: bool = True,
) -> list[Record]:
    """Read records from ``topics`` until ``until(records)`` is true or the deadline passes."""
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest" if from_beginning else "latest",
        enable_auto_commit=False,
        request_timeout_ms=10000,
        metadata_max_age_ms=2000,
    )
    records: list[Record] = []
    deadline = time.monotonic() + timeout
    try:
        await asyncio.wait_for(consumer.start(), timeout=max(1.0, timeout))
    except (KafkaConnectionError, TimeoutError) as exc:
        await _stop_quietly(consumer)
        raise DeadlineExceeded(
            f"could not start reading {what}: the broker at {bootstrap} no longer answers ({exc})"
        ) from exc
    try:
        while not until(records):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                alive = reachable(bootstrap, timeout=2.0)
                raise DeadlineExceeded(
                    f"waited {timeout:.0f} s for {what}; got {len(records)} records so far; "
                    + (
                        "the broker still answers"
                        if alive
                        else f"the broker at {bootstrap} no longer answers (did it die?)"
                    )
                )
            batch = await consumer.getmany(timeout_ms=int(min(remaining, 0.5) * 1000))
            for messages in batch.values():
                records.extend(
                    Record(m.topic, m.partition, m.offset, m.key, m.value, m.timestamp)
                    for m in messages
                )
    finally:
        await _stop_quietly(consumer)
    return records


async def _stop_quietly(consumer: AIOKafkaConsumer) -> None:
    """Stop a consumer whose broker may be gone: the wait's own error is the one to report."""
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await asyncio.wait_for(consumer.stop(), timeout=10)
