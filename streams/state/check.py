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
from streams.state.files import raw_items
from streams.state.store import (
    CLOCK_KEY,
    RESERVED_PREFIX,
    SIGNAL_POSITIONS_KEY,
    StateStore,
)

log = logging.getLogger(__name__)

#: How long a check reads before letting the rest of the worker run (heartbeats, HTTP).
CHECK_SLICE_SECONDS = 0.01
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
    if not (isinstance(value, list) and len(value) == 2 and all(_is_int(v) for v in value)):
        return "partition clock is not [time_ms, last_tick_offset]"
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


def _is_utf8(key: bytes) -> bool:
    try:
        key.decode()
    except UnicodeDecodeError:
        return False
    return True


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
        self.add_scheduled(key, list(state.open_windows), state.last_close_tick)

    def add_scheduled(self, key: bytes, open_starts: list[int], last_close_tick: int) -> None:
        self.agents += 1
        if open_starts:
            self.schedule.track_starts(key, open_starts)
        if last_close_tick >= 0:
            self.schedule.closed_by_tick.setdefault(last_close_tick, []).append(key)

    def describe(self) -> str:
        shown = "; ".join(f"{key[:80]!r}: {why}" for key, why in self.damaged[:3])
        more = len(self.damaged) - 3
        return shown + (f"; and {more} more" if more > 0 else "")


async def check_partition(
    store: StateStore, partition: int, signal_topics: int, *, collect: bool = True
) -> PartitionCheck:
    """Read every entry of ``partition``'s database (letting the event loop run every few
    milliseconds). With ``collect`` false, stop at the first damaged entry: the partition will
    be restored whole anyway, and its schedule built by the check after the restore."""
    check = PartitionCheck(partition)
    started = time.perf_counter()
    try:
        db = store.db(partition)
        deadline = started + CHECK_SLICE_SECONDS
        for count, (key, value) in enumerate(raw_items(db)):
            sealed = None
            if not key.startswith(RESERVED_PREFIX) and _is_utf8(key):
                sealed = sealed_schedule(value)
            if sealed is not None:
                check.add_scheduled(key, *sealed)
            else:
                verdict = judge(key, value, signal_topics)
                if isinstance(verdict, AgentState):
                    check.add_agent(key, verdict)
                elif verdict is not None:
                    check.damaged.append((key, verdict))
                    if not collect:
                        break
            if count % 256 == 0 and time.perf_counter() > deadline:
                await asyncio.sleep(0)
                deadline = time.perf_counter() + CHECK_SLICE_SECONDS
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # RocksDB reports corrupt files while reading them
        check.damaged.append((WHOLE_DATABASE, f"database cannot be read: {exc}"))
    check.seconds = time.perf_counter() - started
    return check


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
