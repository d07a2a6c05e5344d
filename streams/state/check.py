"""Verifying a partition's local database before the worker uses it.

Local state can be damaged behind the worker's back (a disk, an operator, a forged changelog
record), so each partition is read once when it is taken over, and the partition's window
schedule is built as it is read. A state of the current format is checked by its CRC, and its
schedule fields read, without decoding it (:func:`~streams.scoring.codec.sealed_schedule`): about
a twentieth of a decode, which is what lets a worker take a million agents over in seconds. Any
other entry (a reserved one, a state of an older format, anything damaged) is decoded in full.
RocksDB checks its own blocks' checksums as they are read, so damage to the files is found too.

A state can still fail to decode later: one forged with a matching CRC. The store treats it as
damaged when it meets it (:meth:`~streams.state.store.StateStore.lookup`), never as a reason to
stop.

What to do with what the check finds is :mod:`streams.state.restore`'s business: a damaged partition
is deleted and restored from the changelog; what is still undecodable after a full restore came from
the changelog itself and is deleted locally (:func:`drop_damaged`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass, field

import orjson
from rocksdict import WriteBatch

from streams.errors import TrustServiceError
from streams.processing.closing import PartitionClock, PartitionSchedule
from streams.scoring.agent import AgentState
from streams.scoring.codec import decode_state, sealed_schedule
from streams.state.changelog import PERSISTED_OFFSET_KEY
from streams.state.files import scan_items
from streams.state.store import (
    CLOCK_KEY,
    RESERVED_PREFIX,
    SIGNAL_POSITIONS_KEY,
    StateStore,
)

log = logging.getLogger(__name__)

#: Entries a check reads before letting the rest of the worker run (heartbeats, HTTP): a few
#: milliseconds' work.
CHECK_CHUNK = 2048
#: Key reported for a database that fails while being read (no single entry to blame).
WHOLE_DATABASE = b""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def clock_problem(raw: bytes) -> str | None:
    """Why a stored partition clock is unusable (None: it is fine)."""
    try:
        value = orjson.loads(raw)
        PartitionClock.decode(raw)
    except (ValueError, TypeError) as exc:
        return f"partition clock does not decode: {exc}"
    if not (isinstance(value, list) and len(value) in (2, 3) and all(_is_int(v) for v in value)):
        return "partition clock is not [time_ms, last_tick_offset, closes_confirmed]"
    return None


def positions_problem(raw: bytes, signal_topics: int) -> str | None:
    """Why stored signal positions are unusable: one next offset (>= 0) per signal topic, then
    (from this release) the stream time they reached."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return f"signal positions do not decode: {exc}"
    if not (
        isinstance(value, list)
        and len(value) in (signal_topics, signal_topics + 1)
        and all(_is_int(v) and v >= 0 for v in value)
    ):
        return f"signal positions are not {signal_topics} offsets"
    return None


def offset_problem(raw: bytes) -> str | None:
    """Why a stored persisted changelog offset is unusable."""
    try:
        offset = int(raw)
    except ValueError:
        return "persisted changelog offset is not a number"
    return None if offset >= -1 else "persisted changelog offset is negative"


def judge(key: bytes, value: bytes, signal_topics: int) -> AgentState | str | None:
    """One stored entry: the agent state it holds, a reserved entry that is fine (None), or why
    it cannot be used (a string)."""
    if key.startswith(RESERVED_PREFIX):
        if key == CLOCK_KEY:
            return clock_problem(value)
        if key == SIGNAL_POSITIONS_KEY:
            return positions_problem(value, signal_topics)
        if key == PERSISTED_OFFSET_KEY:
            return offset_problem(value)
        return None  # a reserved entry of another release: not ours to judge
    try:
        key.decode()
    except UnicodeDecodeError:
        return "agent key is not UTF-8"
    try:
        return decode_state(value)
    except Exception as exc:  # whatever the cause, this state cannot be used
        return f"agent state does not decode: {exc}"


@dataclass(slots=True)
class PartitionCheck:
    """What reading one partition's database found."""

    partition: int
    #: Agent states that decoded.
    agents: int = 0
    #: The window schedule of those agents, as ``PartitionSchedule.rebuild`` would make it.
    schedule: PartitionSchedule = field(default_factory=PartitionSchedule)
    #: (key, why) of every entry that cannot be used; WHOLE_DATABASE if reading failed.
    damaged: list[tuple[bytes, str]] = field(default_factory=list)
    #: How long reading the partition took.
    seconds: float = 0.0

    def add_agent(self, key: bytes, state: AgentState) -> None:
        self.agents += 1
        self.schedule.track(key, state)
        if state.last_close_tick >= 0:
            self.schedule.closed_by_tick.setdefault(state.last_close_tick, []).append(key)

    def describe(self) -> str:
        shown = "; ".join(f"{key[:80]!r}: {why}" for key, why in self.damaged[:3])
        more = len(self.damaged) - 3
        return shown + (f"; and {more} more" if more > 0 else "")


async def check_partition(
    store: StateStore,
    partition: int,
    signal_topics: int,
    *,
    collect: bool = True,
    fresh: bool = False,
) -> PartitionCheck:
    """Read every entry of ``partition``'s database, a chunk at a time (letting the event loop
    run between chunks). With ``collect`` false, stop at the first damaged entry: the partition
    will be restored whole anyway, and its schedule built by the check after the restore.

    ``fresh``: the database was empty before a restore wrote every entry it holds, so each state
    is what the changelog holds (its batches' CRCs checked as they were read, and RocksDB's own
    as they are read here), and its own CRC is not computed again: a third of the check's cost.
    """
    check = PartitionCheck(partition)
    started = time.perf_counter()
    try:
        entries = scan_items(store.db(partition))
        while chunk := list(itertools.islice(entries, CHECK_CHUNK)):
            if not _check_chunk(check, chunk, signal_topics, verify=not fresh, collect=collect):
                break
            await asyncio.sleep(0)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # RocksDB reports corrupt files while reading them
        check.damaged.append((WHOLE_DATABASE, f"database cannot be read: {exc}"))
    check.seconds = time.perf_counter() - started
    return check


def _check_chunk(
    check: PartitionCheck,
    chunk: list[tuple[bytes, bytes]],
    signal_topics: int,
    *,
    verify: bool,
    collect: bool,
) -> bool:
    """Check ``chunk``'s entries into ``check``; False at a damaged one unless ``collect``. The
    loop runs once per agent of the partition, so it does as little as it can."""
    # One decode for the chunk: a NUL cannot end a multi-byte character, so the joined keys are
    # UTF-8 only if each is. Otherwise each key is judged alone, as any entry that is no sealed
    # state is.
    try:
        b"\x00".join([key for key, _ in chunk]).decode()
        fast = True
    except UnicodeDecodeError:
        fast = False
    closed_by_tick = check.schedule.closed_by_tick
    for key, value in chunk:
        sealed = None
        if fast and key[:1] != RESERVED_PREFIX:
            sealed = sealed_schedule(value, verify=verify)
        if sealed is not None:
            starts, tick = sealed
            check.agents += 1
            if starts:
                check.schedule.track_starts(key, starts)
            if tick >= 0:
                closed = closed_by_tick.get(tick)
                if closed is None:
                    closed_by_tick[tick] = [key]
                else:
                    closed.append(key)
            continue
        verdict = judge(key, value, signal_topics)
        if isinstance(verdict, AgentState):
            check.add_agent(key, verdict)
        elif verdict is not None:
            check.damaged.append((key, verdict))
            if not collect:
                return False
    return True


class UnrepairableState(TrustServiceError, RuntimeError):
    """A partition's database cannot be read even right after being restored from scratch (a
    failing disk?): check the state directory's file system, then restart the worker."""


def drop_damaged(store: StateStore, check: PartitionCheck) -> None:
    """Delete, locally, the entries that are undecodable even as restored from the changelog:
    the changelog holds them so, nothing can repair them, and a worker that kept them would fail
    on them. Their records stay in the changelog; the persisted offset is past them, so they are
    not read again unless the partition is restored from scratch (and dropped again then)."""
    if any(key == WHOLE_DATABASE for key, _ in check.damaged):
        raise UnrepairableState(
            f"partition {check.partition}: freshly restored local state cannot be read: "
            + check.describe()
        )
    batch = WriteBatch(raw_mode=True)
    for key, why in check.damaged:
        log.error(
            "Partition %d: the changelog holds an undecodable entry %r (%s): deleted locally (%s)",
            check.partition,
            key[:200],
            why,
            "the partition goes on without it"
            if key.startswith(RESERVED_PREFIX)
            else "that agent starts afresh with its next signal",
        )
        batch.delete(key)
    store.db(check.partition).write(batch)
    store.counters.state_entries_dropped += len(check.damaged)
