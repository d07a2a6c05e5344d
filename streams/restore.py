"""Bringing a partition's local database up to date with its changelog.

A worker that takes a partition over reads the partition's changelog from the offset after the
one its database last stored (from the start, for an empty database) to the end as it was when
the restore began, and writes the records to RocksDB in large write batches, with the persisted
offset in the same batch. A plain aiokafka consumer reads a few hundred thousand records per
second here; that, not per-record bookkeeping, is what bounds a restore.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from rocksdict import WriteBatch

from .statestore import PERSISTED_OFFSET_KEY, StateStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RestoreReport:
    records: int
    seconds: float


async def restore_partitions(
    store: StateStore,
    bootstrap_servers: str,
    partitions: Iterable[int],
    *,
    fetch_bytes_per_partition: int = 8 * 1024 * 1024,
) -> RestoreReport:
    """Apply to each partition's database the changelog records it has not stored yet."""
    started = time.perf_counter()
    topic = store.changelog_topic
    tps = [TopicPartition(topic, p) for p in sorted(set(partitions))]
    if not tps:
        return RestoreReport(0, 0.0)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=fetch_bytes_per_partition,
        fetch_max_bytes=max(52_428_800, fetch_bytes_per_partition),
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        remaining: dict[TopicPartition, int] = {}
        to_read = 0
        for tp in tps:
            start = store.persisted_offset(tp.partition) + 1
            if start < ends[tp]:
                consumer.seek(tp, start)
                remaining[tp] = ends[tp]
                to_read += ends[tp] - start
        log.info(
            "Restoring partitions %s from the changelog: %d offsets to read",
            [tp.partition for tp in tps],
            to_read,
        )
        records = 0
        while remaining:
            fetched = await consumer.getmany(*remaining, timeout_ms=1000, max_records=50_000)
            for tp, batch in fetched.items():
                if tp not in remaining or not batch:
                    continue
                end = remaining[tp]
                db = store.db(tp.partition)
                writes = WriteBatch(raw_mode=True)
                last = -1
                for record in batch:
                    if record.offset >= end:
                        break
                    if record.value is None:
                        writes.delete(record.key)
                    else:
                        writes.put(record.key, record.value)
                    last = record.offset
                    records += 1
                if last >= 0:
                    writes.put(PERSISTED_OFFSET_KEY, str(last).encode())
                    db.write(writes)
                # Compaction leaves gaps: the position, not the last record, says when it is done.
                if last + 1 >= end or await consumer.position(tp) >= end:
                    del remaining[tp]
        report = RestoreReport(records, time.perf_counter() - started)
        log.info(
            "Restored partitions %s from the changelog: %d records in %.2f s",
            [tp.partition for tp in tps],
            report.records,
            report.seconds,
        )
        return report
    finally:
        await consumer.stop()
