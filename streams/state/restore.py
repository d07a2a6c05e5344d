"""Bringing a partition's local database up to date with its changelog.

A worker that takes a partition over reads the partition's changelog from the offset after the
one its database last stored (from the start, for an empty database) to the end as it was when
the restore began, and writes the records to RocksDB in large write batches, with the persisted
offset in the same batch. The records are read as raw batches (:mod:`streams.kafka.logreader`):
aiokafka's consumer alone takes 2.7 us a record here, twice what writing it to RocksDB costs.

Local state is only a cache of the changelog, so damage to it is repaired rather than fatal
(:func:`restore_verified`): a database that cannot be opened or read, or that holds an entry that
does not decode, is deleted and restored from the start of the changelog. An entry that still
does not decode after that came from the changelog itself; it is deleted locally and counted.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from rocksdict import Rdict, WriteBatch, WriteOptions

from streams.kafka import clients
from streams.kafka.clients import Connectable
from streams.kafka.logreader import Batches, read_to_end, records_of
from streams.state.changelog import PERSISTED_OFFSET_KEY
from streams.state.check import PartitionCheck, check_partition, drop_damaged, offset_problem
from streams.state.store import StateStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RestoreReport:
    records: int
    seconds: float


async def restore_partitions(
    store: StateStore,
    kafka: Connectable,
    partitions: Iterable[int],
    *,
    fetch_bytes_per_partition: int = 8 * 1024 * 1024,
) -> RestoreReport:
    """Apply to each partition's database the changelog records it has not stored yet."""
    started = time.perf_counter()
    starts = {p: store.persisted_offset(p) + 1 for p in sorted(set(partitions))}
    if not starts:
        return RestoreReport(0, 0.0)
    log.info("Restoring partitions from the changelog, from offsets %s", starts)
    client = clients.client(kafka, purpose="changelog-restore")
    await client.start()
    records = 0
    chunks = read_to_end(
        client, store.changelog_topic, starts, partition_bytes=fetch_bytes_per_partition
    )
    try:
        async with contextlib.aclosing(chunks):  # its fetch in flight, cancelled on a failure
            async for chunk in chunks:
                records += _write(store.db(chunk.partition), chunk)
    finally:
        await client.stop()
    for partition in starts:
        # Written without RocksDB's write-ahead log: on disk before the partition is used.
        store.db(partition).flush(wait=True)
    _return_freed_memory()
    report = RestoreReport(records, time.perf_counter() - started)
    log.info(
        "Restored partitions %s from the changelog: %d records in %.2f s",
        list(starts),
        report.records,
        report.seconds,
    )
    return report


#: A restore writes without RocksDB's write-ahead log (a third of its cost): a crash loses the
#: writes not yet flushed, each batch whole with the persisted offset it carries, so the
#: database holds a prefix of the changelog and says so; the restore goes on from there.
_WITHOUT_WAL = WriteOptions()
# A property at run time; rocksdict's type stubs call it a method.
setattr(_WITHOUT_WAL, "disable_wal", True)  # noqa: B010


def _return_freed_memory() -> None:
    """Give the C heap's free memory back to the system. A restore passes every record through
    memory once (a gigabyte for a million agents) in pieces glibc keeps after they are freed:
    measured, a restored worker held 600 MiB more than it used, until this 30 ms call."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: its allocator decides
        ctypes.CDLL(None).malloc_trim(0)


def _write(db: Rdict, chunk: Batches) -> int:
    """Write a chunk's records and the offset it reaches in one batch; how many records."""
    writes = WriteBatch(raw_mode=True)
    put, delete = writes.put, writes.delete
    count = 0
    for record in records_of(chunk):
        value = record.value
        if value is None:
            delete(record.key)
        else:
            put(record.key, value)
        count += 1
    writes.put(PERSISTED_OFFSET_KEY, str(chunk.next_offset - 1).encode())
    db.write(writes, write_opt=_WITHOUT_WAL)
    return count


async def restore_verified(
    store: StateStore, kafka: Connectable, partitions: Iterable[int], signal_topics: int
) -> dict[int, PartitionCheck]:
    """Restore ``partitions`` and check every entry of each; a damaged one is deleted, restored
    from the start of the changelog and checked again (once: what is still undecodable then is
    dropped, never restored again in a loop). Returns each partition's check (its agent count
    and window schedule); the store's agent counts are set from them."""
    wanted = sorted(set(partitions))
    for partition in wanted:
        # The restore itself reads the persisted offset: a damaged one means a damaged database.
        problem = _unreadable_offset(store, partition)
        if problem is not None:
            _reset(store, partition, problem)
    fresh = {p for p in wanted if _is_empty(store, p)}
    await restore_partitions(store, kafka, wanted)
    checks = {
        p: await check_partition(store, p, signal_topics, collect=False, fresh=p in fresh)
        for p in wanted
    }
    damaged = [p for p, check in checks.items() if check.damaged]
    if damaged:
        for partition in damaged:
            _reset(store, partition, checks[partition].describe())
        await restore_partitions(store, kafka, damaged)
        for partition in damaged:
            check = checks[partition] = await check_partition(
                store, partition, signal_topics, fresh=True
            )
            if check.damaged:
                drop_damaged(store, check)
    for partition, check in checks.items():
        store.counters.agents[partition] = check.agents
        log.info(
            "Partition %d: window schedule rebuilt from %d stored agents in %.3f s (each checked)",
            partition,
            check.agents,
            check.seconds,
        )
    return checks


def _is_empty(store: StateStore, partition: int) -> bool:
    try:
        return next(iter(store.db(partition).keys()), None) is None
    except Exception:  # a read of a corrupt file: not empty, and the check will say why
        return False


def _unreadable_offset(store: StateStore, partition: int) -> str | None:
    try:
        raw = store.get(partition, PERSISTED_OFFSET_KEY)
    except Exception as exc:  # a read of a corrupt file
        return f"database cannot be read: {exc}"
    return None if raw is None else offset_problem(raw)


def _reset(store: StateStore, partition: int, why: str) -> None:
    log.error(
        "Partition %d: local state is damaged (%s): deleting it and restoring it from the "
        "changelog",
        partition,
        why,
    )
    store.discard(partition)
