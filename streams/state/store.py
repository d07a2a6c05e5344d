"""Agent state: one RocksDB database per partition, backed by a compacted changelog topic.

Why not a Faust table: Faust's table API reads RocksDB twice per lookup and builds a future and a
coroutine per changelog record, and Faust's recovery replays a changelog at about 3,000 records
per second here, which would keep a worker restoring a million agents for minutes. This store
writes a batch of states to RocksDB in one write batch and to the changelog in one producer batch
per partition, and restores with a plain consumer and write batches (see
:mod:`streams.state.restore`). Faust still assigns partitions; a worker holds the databases of the
partitions it owns.

Writes are staged, not written per batch: a state changed by many batches in a short time is encoded
and written once. Staged states are written when :mod:`streams.processing.durability` says so (a
checkpoint every state flush interval, a slice at a time; the states behind an output before it is
sent): sent to the changelog first, and into RocksDB only once Kafka has confirmed them
(:mod:`streams.state.changelog`). Until then they are read from memory, never from RocksDB.

Each database also holds, under reserved keys, the partition's clock and the changelog offset it
is known to contain ("persisted offset"): a restart replays only the changelog after it.

Keys are raw DID bytes, the same bytes producers partition by.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
from rocksdict import Rdict

from streams.kafka.delivery import DeliveryHealth, Retrying
from streams.scoring.agent import AgentState
from streams.scoring.codec import StateFormatError, decode_state, encode_state
from streams.state.cache import StateCache
from streams.state.changelog import PERSISTED_OFFSET_KEY, ChangelogWriter
from streams.state.files import StateCounters
from streams.state.localdb import PartitionDatabases

log = logging.getLogger(__name__)

#: Keys that are not agents start with a NUL byte, which no DID can contain.
RESERVED_PREFIX = b"\x00"
CLOCK_KEY = b"\x00partition-clock"
#: Next offset to read per signal topic (dimension order): written after the states they led to,
#: in the same changelog partition, so a database never holds a position ahead of its states.
SIGNAL_POSITIONS_KEY = b"\x00signal-positions"


class StateStore:
    def __init__(
        self,
        *,
        state_dir: Path,
        changelog_topic: str,
        producer: Callable[[], Any],
        cache_agents: int = 20_000,
        cache_bytes: int = 256 * 1024 * 1024,
        delivery: Retrying | None = None,
        rocksdb_memory_bytes: int | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.directory = state_dir / "agent-state"
        self.rocksdb_memory_bytes = rocksdb_memory_bytes
        #: Resets, dropped entries, expired and live agents (see streams.state.files).
        self.counters = StateCounters()
        self.databases = PartitionDatabases(self.directory, rocksdb_memory_bytes, self.counters)
        self.changelog_topic = changelog_topic
        self._cache = StateCache(cache_agents, cache_bytes)
        # Changed since the last persist, per partition; the cache may evict, the stage may not.
        self._staged: dict[int, dict[bytes, AgentState]] = {}
        self._staged_last: dict[int, dict[bytes, bytes]] = {}
        # The raw entries the persist under way took, to be written after its states.
        self._taken_last: dict[int, dict[bytes, bytes]] = {}
        # Taken from the stage by a persist that writes them a slice at a time; read like the
        # stage until written.
        self._persisting: dict[int, dict[bytes, AgentState]] = {}
        #: Sends states to the changelog and confirms them (retrying what the broker refused).
        self.changelog = ChangelogWriter(
            changelog_topic,
            producer,
            delivery if delivery is not None else Retrying(DeliveryHealth()),
            self.db,
        )

    # -- databases -----------------------------------------------------------------------------

    def db(self, partition: int) -> Rdict:
        return self.databases.get(partition)

    def rocksdb_memory(self) -> dict[str, int]:
        """Bytes RocksDB holds in memory, by kind, over the open databases."""
        return self.databases.memory_in_use()

    def discard(self, partition: int) -> None:
        """Close and delete a damaged database (the next :meth:`db` opens it empty, for a
        restore from the start of the changelog) and forget what is held of it in memory."""
        self.databases.discard(partition)
        self.forget({partition})

    def persisted_offset(self, partition: int) -> int:
        """The last changelog offset this partition's database is known to contain (-1: none)."""
        raw = self.db(partition).get(PERSISTED_OFFSET_KEY)
        return -1 if raw is None else int(raw)

    def signal_positions(self, partition: int) -> list[int] | None:
        """Where to resume reading each signal topic's ``partition`` (None: from the start)."""
        raw = self.get(partition, SIGNAL_POSITIONS_KEY)
        return None if raw is None else [int(p) for p in orjson.loads(raw)]

    # -- reads ---------------------------------------------------------------------------------

    def get(self, partition: int, key: bytes) -> bytes | None:
        """An entry's newest value: sent and not yet confirmed, else the local database's."""
        found, value = self.changelog.pending(partition, key)
        if not found:
            value = self.db(partition).get(key)
        return value

    def lookup(self, partition: int, key: bytes) -> AgentState | None:
        """The current state of an agent: staged, cached, or decoded from RocksDB."""
        for held in (self._staged, self._persisting):
            states = held.get(partition)
            if states is not None:
                state = states.get(key)
                if state is not None:
                    return state
        state = self.cached(partition, key)
        if state is None:
            raw = self.get(partition, key)
            state = None if raw is None else decoded_or_dropped(self, partition, key, raw)
        return state

    def cached(self, partition: int, key: bytes) -> AgentState | None:
        return self._cache.get((partition, key))

    def iter_agents(self, partition: int) -> Iterator[tuple[bytes, AgentState]]:
        """Every agent state of ``partition`` held locally (after a restore: all of them)."""
        staged = {**self._persisting.get(partition, {}), **self._staged.get(partition, {})}
        unconfirmed = {
            key: value
            for key, value in self.changelog.pending_items(partition)
            if not key.startswith(RESERVED_PREFIX) and key not in staged
        }
        items: Iterator[tuple[bytes, bytes]] = iter(self.db(partition).items())  # type: ignore[arg-type]
        for key, stored in items:
            if key.startswith(RESERVED_PREFIX):
                continue
            state = staged.pop(key, None)
            if state is not None:
                yield key, state
                continue
            value = unconfirmed.pop(key, stored)
            if value is not None:  # else deleted, and not yet confirmed
                decoded = decoded_or_dropped(self, partition, key, value)
                if decoded is not None:
                    yield key, decoded
        yield from staged.items()  # agents not yet written at all
        for key, value in unconfirmed.items():
            if value is not None:  # what this worker encoded: decodes
                yield key, decode_state(value)

    # -- the cache and the stage ---------------------------------------------------------------

    def remember(self, partition: int, key: bytes, state: AgentState) -> None:
        """Keep a state decoded once it is written (until then the stage holds it)."""
        self._cache.put((partition, key), state)

    @property
    def cached_bytes(self) -> int:
        """Estimated memory of the decoded states cached now."""
        return self._cache.bytes

    def held_agents(self) -> int:
        """States changed and not yet written: staged, or taken by a write still under way."""
        return sum(map(len, self._staged.values())) + sum(map(len, self._persisting.values()))

    def stage(self, partition: int, key: bytes, state: AgentState) -> None:
        """Record a changed state, to be written by the next persist. It goes into the cache
        when written: an active agent is staged at every batch, and charging the cache its size
        each time cost 8% of the worker at half load."""
        self._staged.setdefault(partition, {})[key] = state

    def stage_last(self, partition: int, key: bytes, value: bytes) -> None:
        """Record a raw entry to be written after the partition's staged states (a partition's
        changelog records stay in order, so this entry proves those states are stored)."""
        self._staged_last.setdefault(partition, {})[key] = value

    def is_held(self, partition: int, key: bytes) -> bool:
        """The agent's state is staged, being written or not yet confirmed by the changelog:
        newer than what RocksDB holds."""
        held = key in self._staged.get(partition, ()) or key in self._persisting.get(partition, ())
        return held or self.changelog.pending(partition, key)[0]

    def held_keys(self, partition: int) -> set[bytes]:
        """Every key :meth:`is_held` is true of (reserved keys included): RocksDB may not have
        them yet, so a reader going through the database in key order needs them too."""
        keys = {*self._staged.get(partition, ()), *self._persisting.get(partition, ())}
        keys.update(key for key, _ in self.changelog.pending_items(partition))
        return keys

    async def delete_agents(self, partition: int, keys: Sequence[bytes]) -> None:
        """Tombstone agents (none of them held) on the changelog, in order with every state sent
        before; deleted locally once the changelog has the tombstones."""
        for key in keys:
            self._cache.drop((partition, key))
        await self.changelog.send(partition, [(key, None) for key in keys])

    def forget(self, partitions: set[int] | None = None) -> None:
        """Drop cached and staged states of ``partitions`` (all when None).

        For partitions given up (persist first: their stored state may change elsewhere), or for
        everything after a failed batch (its half-applied changes must never be written).
        """
        self._cache.drop_partitions(partitions)
        for held in (self._staged, self._staged_last, self._taken_last, self._persisting):
            for partition in list(held) if partitions is None else partitions:
                held.pop(partition, None)
        if partitions is not None:
            self.changelog.drop(partitions)

    # -- writes --------------------------------------------------------------------------------

    async def persist_agents(self, agents: set[tuple[int, bytes]]) -> None:
        """Write only the staged states of ``agents`` ((partition, key) pairs): those that record
        an output about to be published. Writing a state ahead of the others is safe; only the
        reserved entries (clock, positions) must follow every state they cover, and they wait
        for the next full persist (:meth:`begin_persist`)."""
        by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
        for partition, key in agents:
            state = self._staged.get(partition, {}).pop(key, None)
            if state is not None:
                by_partition.setdefault(partition, []).append((key, encode_state(state)))
                self.remember(partition, key, state)
        for partition, items in by_partition.items():
            await self.write(partition, items)

    async def persist_entries(self, key: bytes) -> None:
        """Write the staged raw entries named ``key`` (a reserved key: the partition clocks)."""
        for partition, entries in list(self._staged_last.items()):
            value = entries.pop(key, None)
            if value is not None:
                self._taken_last.get(partition, {}).pop(key, None)  # older: never written now
                await self.write(partition, [(key, value)])

    def begin_persist(self) -> list[tuple[int, list[bytes]]]:
        """Take everything staged so far, to be written a slice at a time: the agents to write
        ((partition, keys) per partition), then the raw entries (:meth:`write_taken_entries`).

        States staged from now on go to a fresh stage; the taken ones stay readable until
        written (:meth:`write_persisting`), and a taken state changed again meanwhile is simply
        staged again.
        """
        staged, self._staged = self._staged, {}
        self._taken_last, self._staged_last = self._staged_last, {}
        for partition, states in staged.items():
            self._persisting.setdefault(partition, {}).update(states)
        return [(p, list(states)) for p, states in staged.items()]

    async def write_persisting(self, partition: int, keys: Sequence[bytes]) -> None:
        """Write these taken states (those still taken: a forgotten partition has none)."""
        taken = self._persisting.get(partition)
        if not taken:
            return
        items = []
        for key in keys:
            state = taken.pop(key, None)
            if state is not None:
                items.append((key, encode_state(state)))
                self.remember(partition, key, state)
        if not taken:
            del self._persisting[partition]
        await self.write(partition, items)

    async def write_taken_entries(self) -> None:
        """The raw entries :meth:`begin_persist` took, less any :meth:`persist_entries` wrote
        since: an older clock landing after a newer one would confirm a tick's closes early."""
        taken, self._taken_last = self._taken_last, {}
        for partition, items in taken.items():
            await self.write(partition, list(items.items()))

    async def write(self, partition: int, items: Sequence[tuple[bytes, bytes]]) -> None:
        """Send ``items``, in order, to the changelog partition; they are written locally once
        it has them (see :mod:`streams.state.changelog`), and read from memory until then.

        Returns at once (they are queued, in order, for the producer); :meth:`confirm` is what
        waits until the changelog holds them (and sends again what it refused), and nothing that
        depends on them may happen before.
        """
        await self.changelog.send(partition, items)

    async def changelog_room(self) -> None:
        """Return once at most one write waits to be handed to the producer."""
        await self.changelog.room()

    async def confirm(self) -> None:
        """Return once the changelog, and then the local database, holds every record sent
        before this call (see :meth:`streams.state.changelog.ChangelogWriter.confirm`)."""
        await self.changelog.confirm()


class PartitionStates:
    """Agent states of one partition as one batch sees them: each looked up at most once."""

    __slots__ = ("_dirty", "_loaded", "partition", "store")

    def __init__(self, store: StateStore, partition: int) -> None:
        self.store = store
        self.partition = partition
        self._loaded: dict[bytes, AgentState | None] = {}
        self._dirty: set[bytes] = set()

    def get(self, key: bytes) -> AgentState | None:
        try:
            return self._loaded[key]
        except KeyError:
            state = self.store.lookup(self.partition, key)
            self._loaded[key] = state
            return state

    def get_or_new(self, key: bytes) -> AgentState:
        state = self.get(key)
        if state is None:
            state = AgentState()
            self._loaded[key] = state
            agents = self.store.counters.agents
            agents[self.partition] = agents.get(self.partition, 0) + 1
        return state

    def mark_dirty(self, key: bytes) -> None:
        self._dirty.add(key)

    def stage_changes(self) -> None:
        """Hand the batch's changed states to the store, to be written at the next persist."""
        loaded = self._loaded
        stage = self.store.stage
        partition = self.partition
        for key in self._dirty:
            state = loaded[key]
            assert state is not None
            stage(partition, key, state)
        self._dirty.clear()


def decoded_or_dropped(
    store: StateStore, partition: int, key: bytes, raw: bytes
) -> AgentState | None:
    """The state stored bytes hold; None for bytes that are not one. The takeover check reads
    only a state's CRC and schedule, so a state forged onto the changelog with a matching CRC is
    first met here: like what the check finds undecodable in a restored partition, it is deleted
    locally and the agent starts afresh, never a reason to stop."""
    try:
        return decode_state(raw)
    except StateFormatError as exc:
        log.error(
            "Partition %d: stored state of %r does not decode (%s): deleted locally, that agent "
            "starts afresh with its next signal",
            partition,
            key[:200],
            exc,
        )
        store.db(partition).delete(key)
        store.counters.state_entries_dropped += 1
        return None
