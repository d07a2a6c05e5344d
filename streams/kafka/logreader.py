"""Reading partitions of a topic from given offsets to their end, as raw record batches.

A changelog restore reads millions of records once and needs only each record's key and value.
aiokafka's consumer builds a Python ``ConsumerRecord`` of eleven fields per record and hands it
through a generator: about 2.7 us per record here, most of a restore's time. This reader sends
Fetch requests itself over an aiokafka client (the same connection, security and protocol
version handling as every other client) and hands out aiokafka's C record batches, whose records
are read in C (:func:`records_of`).

What the consumer did that a restore needs is done here too:
- batches are CRC-checked; control batches and batches of aborted transactions are skipped
  (read_committed, as every reader of the service);
- a partition is read up to its last stable offset as the broker first reports it: the end as it
  was when the read began;
- a partition whose leader moved, or a broker that cannot be reached, is fetched again once
  metadata is refreshed, for as long as it takes (as every client of the service waits out a
  broker outage), with a warning every :data:`REPORT_EVERY_S`; an error that retrying cannot
  cure (no permission to read, a corrupt batch) fails the read at once;
- an offset below the log's start (records deleted) continues from the log's start;
- compaction gaps are crossed by each batch's next offset, never by counting records;
- the next fetch is sent before a response's batches are handed out, so the broker's work
  overlaps the caller's.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import struct
import time
from collections.abc import AsyncGenerator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition
from aiokafka import errors as kafka_errors
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.record.memory_records import MemoryRecords

from streams.errors import TrustServiceError

log = logging.getLogger(__name__)

READ_COMMITTED = 1
#: How long the broker may hold a fetch that finds nothing (a read asks for what exists).
FETCH_MAX_WAIT_MS = 100
RETRY_BACKOFF_S = 0.1
#: How often a partition that cannot be read is reported while the reader retries it.
REPORT_EVERY_S = 30.0
#: A control record's key: version, then type (0 aborts a transaction, 1 commits it).
_CONTROL_KEY = struct.Struct(">hh")
_ABORT = 0


class LogReadFailed(TrustServiceError, RuntimeError):
    """A partition could not be read: a corrupt batch, or a broker refusing it for longer than
    the reader waits (the message says which)."""


@dataclass(frozen=True, slots=True)
class Batches:
    """Record batches of one partition, in offset order. The first may begin before ``start``
    and the last end after ``end``: :func:`records_of` gives only the records in between."""

    partition: int
    batches: list[Any]  # aiokafka's DefaultRecordBatch
    start: int
    end: int
    #: The offset the partition is read from next: every offset before it has been handed out
    #: (compaction gaps included), so a reader that stored these batches may say it holds
    #: everything up to ``next_offset - 1``.
    next_offset: int


def records_of(chunk: Batches) -> Iterator[Any]:
    """The records of ``chunk`` in [start, end), iterated in C for the whole batches."""
    parts: list[Iterable[Any]] = []
    for batch in chunk.batches:
        if batch.base_offset >= chunk.start and batch.next_offset <= chunk.end:
            parts.append(batch)
        else:
            parts.append([r for r in batch if chunk.start <= r.offset < chunk.end])
    return itertools.chain.from_iterable(parts)


@dataclass(slots=True)
class _Partition:
    number: int
    position: int
    #: Known from the first answer (its last stable offset); None until then.
    end: int | None = None
    failing_since: float | None = None
    reported_at: float | None = None
    last_error: str = ""


async def read_to_end(
    client: Any,
    topic: str,
    starts: Mapping[int, int],
    *,
    partition_bytes: int = 8 * 1024 * 1024,
    request_bytes: int = 64 * 1024 * 1024,
) -> AsyncGenerator[Batches, None]:
    """Yield the batches of each partition of ``topic`` in ``starts`` from its start offset to
    its end. ``client`` is a started aiokafka client; it is not closed here."""
    pending = {p: _Partition(p, max(0, start)) for p, start in starts.items()}
    inflight: asyncio.Task[tuple[Any, dict[int, int]]] | None = None
    await client.add_topic(topic)  # metadata (leaders) of the topic, from now on
    try:
        while pending:
            if inflight is None:
                inflight = await _fetch(client, topic, pending, partition_bytes, request_bytes)
                if inflight is None:
                    _report_failing(topic, pending)
                    continue
            try:
                response, requested = await inflight
            except kafka_errors.KafkaError as exc:  # the connection, not a partition
                _failing(pending.values(), f"{type(exc).__name__}: {exc}")
                _report_failing(topic, pending)
                client.force_metadata_update()
                await asyncio.sleep(RETRY_BACKOFF_S)
                continue
            finally:
                inflight = None
            ready = _take(client, topic, response, requested, pending)
            if pending:
                inflight = await _fetch(client, topic, pending, partition_bytes, request_bytes)
            for chunk in ready:
                yield chunk
            _report_failing(topic, pending)
    finally:
        if inflight is not None:
            inflight.cancel()


async def _fetch(
    client: Any,
    topic: str,
    pending: dict[int, _Partition],
    partition_bytes: int,
    request_bytes: int,
) -> asyncio.Task[tuple[Any, dict[int, int]]] | None:
    """Send one fetch, to the leader of the most pending partitions (the others are asked in
    later rounds); None, after a metadata refresh and a pause, when no leader is known."""
    by_leader: dict[int, list[_Partition]] = {}
    for part in pending.values():
        leader = client.cluster.leader_for_partition(TopicPartition(topic, part.number))
        if leader is not None and leader != -1:
            by_leader.setdefault(leader, []).append(part)
    if sum(map(len, by_leader.values())) < len(pending):
        client.force_metadata_update()  # some leader is not known (yet): refreshed meanwhile
    if not by_leader:
        _failing(pending.values(), "no leader known")
        await asyncio.sleep(RETRY_BACKOFF_S)
        return None
    leader, parts = max(by_leader.items(), key=lambda item: len(item[1]))
    requested = {part.number: part.position for part in parts}
    fetch = FetchRequest(
        FETCH_MAX_WAIT_MS,
        1,
        request_bytes,
        READ_COMMITTED,
        [(topic, [(part.number, part.position, partition_bytes) for part in parts])],
    )

    async def send() -> tuple[Any, dict[int, int]]:
        return await client.send(leader, fetch), requested

    return asyncio.ensure_future(send())


def _take(
    client: Any,
    topic: str,
    response: Any,
    requested: dict[int, int],
    pending: dict[int, _Partition],
) -> list[Batches]:
    """Move each answered partition on; what it brought, as :class:`Batches`."""
    version = response.API_VERSION
    ready = []
    for _topic, answers in response.topics:
        for number, error_code, highwater, *data in answers:
            part = pending.get(number)
            if part is None or requested.get(number) != part.position:
                continue
            error = kafka_errors.for_code(error_code)
            if error is kafka_errors.NoError:
                part.failing_since = part.reported_at = None
                if part.end is None:
                    part.end = data[0] if version >= 4 else highwater
                start = part.position
                batches, part.position = data_batches(
                    topic,
                    number,
                    MemoryRecords(data[-1]),
                    start,
                    aborted_transactions(version, data),
                )
                if batches:
                    ready.append(
                        Batches(number, batches, start, part.end, min(part.position, part.end))
                    )
                if part.position >= part.end:
                    del pending[number]
                    if not batches and start < part.end:  # the end is a compaction gap
                        ready.append(Batches(number, [], start, part.end, part.end))
            elif (
                error is kafka_errors.OffsetOutOfRangeError
                and version >= 5
                and data[1] > (part.position)
            ):
                log.warning(
                    "%s[%d]: offset %d was deleted from the log; reading on from its start, %d",
                    topic,
                    number,
                    part.position,
                    data[1],
                )
                part.position = data[1]
            elif error.retriable or error is kafka_errors.UnknownTopicOrPartitionError:
                _failing([part], error.__name__)
                client.force_metadata_update()
            else:
                raise LogReadFailed(
                    f"{topic}[{number}] cannot be read from offset {part.position}: "
                    f"{error.__name__}"
                )
    return ready


def aborted_transactions(version: int, data: list[Any]) -> list[tuple[int, int]]:
    """(producer id, first offset) of the transactions aborted in this answer, oldest first."""
    if version < 4:
        return []
    aborted = data[1] if version == 4 else data[2]
    return sorted(aborted or [], key=lambda pair: pair[1])


def data_batches(
    topic: str, number: int, records: Any, position: int, aborted: list[tuple[int, int]]
) -> tuple[list[Any], int]:
    """The data batches of an answer from ``position`` on, and the offset to fetch next."""
    kept = []
    aborting: set[int] = set()
    while (batch := records.next_batch()) is not None:
        if batch.next_offset <= position:
            continue  # wholly before what was asked (the broker answers from a batch's start)
        if not batch.validate_crc():
            raise LogReadFailed(
                f"{topic}[{number}]: the batch at offset {batch.base_offset} is corrupt "
                "(its CRC does not match)"
            )
        while aborted and aborted[0][1] <= batch.base_offset:
            aborting.add(aborted.pop(0)[0])
        if batch.is_control_batch:
            for control in batch:
                if control.key is not None and _CONTROL_KEY.unpack_from(control.key)[1] == _ABORT:
                    aborting.discard(batch.producer_id)
        elif not (batch.is_transactional and batch.producer_id in aborting):
            kept.append(batch)
        position = batch.next_offset
    return kept, position


def _failing(parts: Iterable[_Partition], why: str) -> None:
    now = time.monotonic()
    for part in parts:
        if part.failing_since is None:
            part.failing_since = now
        part.last_error = why


def _report_failing(topic: str, pending: dict[int, _Partition]) -> None:
    """Warn of each partition that has not been read for :data:`REPORT_EVERY_S`, and again
    every time as long again passes."""
    now = time.monotonic()
    for part in pending.values():
        since = part.failing_since
        if since is None or now - (part.reported_at or since) < REPORT_EVERY_S:
            continue
        part.reported_at = now
        log.warning(
            "%s[%d] has not been readable for %.0f s (last: %s); retrying. Is the broker up?",
            topic,
            part.number,
            now - since,
            part.last_error,
        )
