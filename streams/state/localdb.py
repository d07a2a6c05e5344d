"""The RocksDB databases that hold a worker's agent state: one per partition, opened with one
memory budget shared by all of them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from rocksdict import BlockBasedOptions, Cache, Options, Rdict, WriteBufferManager

from streams.errors import TrustServiceError
from streams.state.files import StateCounters, open_or_wipe, wipe

#: What :func:`memory_in_use` reports, and the RocksDB property behind each.
ROCKSDB_MEMORY_PROPERTIES = {
    "memtables": "rocksdb.size-all-mem-tables",
    "table_readers": "rocksdb.estimate-table-readers-mem",
    "block_cache": "rocksdb.block-cache-usage",
}


@dataclass(frozen=True)
class RocksMemory:
    """One memory budget for RocksDB across all of a worker's partition databases.

    Without it each database has its own block cache (32 MiB by default) and memtables, so
    RocksDB's memory grows with the number of partitions a worker owns, and index blocks of
    table files are held outside any cache. Here the memtables are charged to the one shared
    block cache, which also holds the index and filter blocks: the cache's capacity bounds it all.
    """

    cache: Cache
    write_buffers: WriteBufferManager

    @classmethod
    def of(cls, total_bytes: int) -> RocksMemory:
        cache = Cache(total_bytes)
        # Up to half for memtables (flushed once they fill it): writes stay batched.
        write_buffers = WriteBufferManager.new_write_buffer_manager_with_cache(
            total_bytes // 2, False, cache
        )
        return cls(cache, write_buffers)


def open_partition_db(directory: Path, memory: RocksMemory | None = None) -> Rdict:
    directory.mkdir(parents=True, exist_ok=True)
    options = Options(raw_mode=True)
    # RocksDB's 64 MiB memtables, two per database and one database per partition, would take
    # more memory than a million agents' state; 16 MiB keeps writes batched all the same.
    options.set_write_buffer_size(16 * 1024 * 1024)
    options.set_max_write_buffer_number(2)
    if memory is not None:
        # A memtable is flushed whole: small ones next to a small budget keep it close.
        options.set_write_buffer_size(
            min(16 * 1024 * 1024, memory.write_buffers.get_buffer_size() // 8)
        )
        options.set_write_buffer_manager(memory.write_buffers)
        table = BlockBasedOptions()
        table.set_block_cache(memory.cache)
        table.set_cache_index_and_filter_blocks(True)
        table.set_pin_l0_filter_and_index_blocks_in_cache(True)
        options.set_block_based_table_factory(table)
    # The options are given for the default column family too: for a database that exists,
    # rocksdict otherwise reloads that family's options from its OPTIONS file, with a fresh 8 MiB
    # block cache instead of the shared budget, in which an index block over 512 KiB (a 16 MB
    # table file) fits no cache shard. Measured: every lookup then read and decompressed the
    # index again, 135 us against 1.3 us.
    return Rdict(str(directory), options=options, column_families={"default": options})


def memory_in_use(dbs: Iterable[Rdict], shared: RocksMemory | None) -> dict[str, int]:
    """Bytes RocksDB holds in memory, by kind, over ``dbs`` (RocksDB's own estimates: memtables,
    index and filter blocks of open table files, block cache)."""
    totals = dict.fromkeys(ROCKSDB_MEMORY_PROPERTIES, 0)
    for db in dbs:
        for kind, prop in ROCKSDB_MEMORY_PROPERTIES.items():
            totals[kind] += db.property_int_value(prop) or 0
    if shared is not None:
        # One shared cache: each database reports all of it.
        totals["block_cache"] = shared.cache.get_usage()
    return totals


class PartitionHandedOver(TrustServiceError, RuntimeError):
    """A partition's database was asked for while a restore process has it open."""


class PartitionDatabases:
    """A worker's partition databases under ``directory``, each opened when first asked for
    (one that cannot be opened is deleted and opened empty), all within one memory budget."""

    def __init__(self, directory: Path, memory_bytes: int | None, counters: StateCounters) -> None:
        self.directory = directory
        self._memory = None if memory_bytes is None else RocksMemory.of(memory_bytes)
        self._counters = counters
        self._open: dict[int, Rdict] = {}
        # Partitions whose databases another process has open (a restore): never opened here.
        self._handed_over: set[int] = set()

    def get(self, partition: int) -> Rdict:
        db = self._open.get(partition)
        if db is None:
            if partition in self._handed_over:
                raise PartitionHandedOver(
                    f"partition {partition}'s database is open in a restore process"
                )
            db = self._open[partition] = open_or_wipe(
                self.directory / f"partition-{partition}",
                partial(open_partition_db, memory=self._memory),
                self._counters,
            )
        return db

    def discard(self, partition: int) -> None:
        """Close and delete a partition's database: the next :meth:`get` opens it empty."""
        db = self._open.pop(partition, None)
        if db is not None:
            db.close()
        wipe(self.directory / f"partition-{partition}")
        self._counters.local_store_resets += 1

    def hand_over(self, partitions: Iterable[int]) -> None:
        """Close ``partitions``' databases for another process to open (RocksDB lets one process
        at a time have a database open); :meth:`get` refuses them until :meth:`take_back`."""
        for partition in partitions:
            self._handed_over.add(partition)
            db = self._open.pop(partition, None)
            if db is not None:
                db.close()

    def take_back(self, partitions: Iterable[int]) -> None:
        self._handed_over.difference_update(partitions)

    def close(self) -> None:
        """Close every open database (each is opened again when next asked for)."""
        for db in self._open.values():
            db.close()
        self._open.clear()

    def memory_in_use(self) -> dict[str, int]:
        return memory_in_use(self._open.values(), self._memory)
