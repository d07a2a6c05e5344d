"""A partition's RocksDB directory on disk: opening it, and throwing it away when it is damaged.

Local state is a cache of the changelog: a database that cannot be opened (files replaced,
truncated, corrupted) is deleted and restored from the changelog instead of stopping the worker,
which would only crash again on the same files at every restart. The one open failure that is
never a reason to delete is a held lock: another live process (a second worker pointed at the
same state directory) is using the database, and deleting it under that process would destroy
its state.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rocksdict import Rdict, ReadOptions

log = logging.getLogger(__name__)


@dataclass(slots=True)
class StateCounters:
    """What happened to the worker's local state (read by the metrics)."""

    #: Partition databases thrown away (unopenable, or holding undecodable entries) and
    #: restored from the changelog.
    local_store_resets: int = 0
    #: Undecodable entries found even after a full restore from the changelog (the changelog
    #: itself holds them): deleted locally, since nothing can repair them.
    state_entries_dropped: int = 0
    #: Idle agents removed because no signal was applied to them within the TTL.
    agents_expired: int = 0
    #: Agents per partition: counted exactly when a partition is taken over and verified, then
    #: adjusted as agents are created and expired (so approximate only across a failed batch).
    agents: dict[int, int] = field(default_factory=dict)

    def live_agents(self, partitions: Iterable[int]) -> int:
        """Agents held in ``partitions`` (the ones this worker owns)."""
        return sum(self.agents.get(p, 0) for p in partitions)


def raw_items(db: Rdict, from_key: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
    """A raw-mode database's entries in key order (from ``from_key`` on), typed as they are."""
    return iter(db.items(from_key=from_key))  # type: ignore[arg-type]


def scan_items(db: Rdict) -> Iterator[tuple[bytes, bytes]]:
    """Every entry of a raw-mode database, read once in order: read ahead in large blocks, and
    kept out of the block cache, which holds what the worker reads again (a quarter faster)."""
    options = ReadOptions()
    options.fill_cache(False)  # type: ignore[call-arg]  # the stub lacks its argument
    options.set_readahead_size(4 * 1024 * 1024)
    return iter(db.items(read_opt=options))  # type: ignore[arg-type]


def is_lock_error(exc: BaseException) -> bool:
    """RocksDB's LOCK file is held: someone else has the database open."""
    text = str(exc).lower()
    return "lock" in text and ("io error" in text or "resource temporarily unavailable" in text)


def wipe(directory: Path) -> None:
    """Delete a partition's database (a directory, or whatever took its place)."""
    if directory.is_dir() and not directory.is_symlink():
        shutil.rmtree(directory)
    elif directory.exists() or directory.is_symlink():
        directory.unlink()


def open_or_wipe(
    directory: Path, open_db: Callable[[Path], Rdict], counters: StateCounters
) -> Rdict:
    """Open a partition's database; one that cannot be opened is deleted and opened empty (its
    persisted offset is then unknown, so the next restore reads the changelog from the start)."""
    try:
        return open_db(directory)
    except Exception as exc:
        if is_lock_error(exc):
            raise
        log.error(
            "Local state in %s cannot be opened (%s): deleting it; the partition is restored "
            "from the changelog",
            directory,
            exc,
        )
        counters.local_store_resets += 1
        wipe(directory)
        return open_db(directory)
