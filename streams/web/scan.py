"""Reading many stored agents for the API without holding up scoring.

Fleet-wide views (agents at risk, the health report) read agents a page at a time, and each
page in slices of about a millisecond on the event loop, which is given back between slices (one
slice at a time across all readers): a signal, and the revocation it causes, waits for at most one
slice between two of its turns. While windows are closing, a burst of work for scoring, slices
are held back (up to half a second each). Fleet-wide counts come from a census of each worker's
partitions taken the same way, on demand, at most once a minute and no more often than every ten
times its own duration, and served from memory in between.

Measured on this machine (2 cores shared with the broker; tests/unit/test_api_scan.py holds the
behaviour, not the figures): a full state (3.7 KB: 100 values per dimension, 100 history
entries) decodes in 92-96 us and its score and revoked flag alone are read in 20-45 us
(:func:`score_and_revoked`); the state of an agent seen once, in 9-18 us and 1-2 us. Over
100,000 full states in six partitions, a census took 2.8-4.3 s in 2,300 slices of 1 ms (CPU per
slice: median 1.1 ms, max 1.8 ms); a health-report page of 100 agents 7-20 ms; an at-risk page
that reads its whole budget of 10,000 agents and finds none 75-225 ms. So at a million full
states a census costs about half a minute of CPU, and at most a tenth of the worker's time.

Why slices on the loop and not a thread over a RocksDB snapshot: decoding a state is Python work
that holds the GIL, so a reader thread would take the interpreter from the loop for up to the
switch interval (5 ms) each time, and could not see the states held in memory (staged, being
written, sent to the changelog and not yet confirmed), which the store only reads on the loop.
Why not an index of agents at risk kept by the handlers: "at risk" moves with the warning
threshold, a live setting, so a change of it would need the full scan anyway, and the hot path
would pay for every state staged.

Each slice starts a fresh RocksDB iterator at the next key, and a key whose newest state is still
in memory is read through :meth:`StateStore.lookup`, so a page never shows a state older than what
the worker holds, nor one it has deleted.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from streams.scoring.agent import AgentState
from streams.scoring.codec import READABLE_FORMATS, StateFormatError, decode_state
from streams.scoring.model import Tier, tier_for
from streams.state.files import raw_items
from streams.state.store import StateStore

#: Tiers as the census counts them.
TIER_ORDER: tuple[Tier, ...] = tuple(Tier)
#: The first key that is not reserved (reserved keys start with NUL).
FIRST_AGENT_KEY = b"\x01"
#: How long one slice may read before the loop is given back.
SLICE_SECONDS = 0.001
#: Share of the worker's time the fleet-wide views may take while they are read without a pause:
#: after each slice the loop is left to scoring for the time of (1 - share) / share slices.
#: Measured (the apiload benchmark: a million stored agents read in a loop at 10% load, on two
#: cores shared with the broker and the reading client), revocation p99 while reading against
#: without: 2.20x with no pause, 1.61x at a share of 0.2 (page p99 39 ms), 1.34x at 0.1 (page p99
#: 1.3 s); the p99 without reading varied from 133 to 179 ms between runs. With the slices also
#: held back while windows close (BUSY_HOLD_SECONDS), at 0.1: 1.02x and 0.89x in two runs, against
#: 1.35x without that hold in the same session (background agents with full histories).
VIEWS_SHARE = 0.1
_PAUSE_PER_SLICE = (1 - VIEWS_SHARE) / VIEWS_SHARE
#: Longest a slice is held back, after its pause, while scoring is busy with a burst (windows
#: closing): during a burst the views take at most one slice in this long.
BUSY_HOLD_SECONDS = 0.5
#: How often a held-back slice looks again.
BUSY_POLL_SECONDS = 0.01
#: Keys read between two looks at the clock.
KEYS_PER_CLOCK_CHECK = 8
#: A census waits at least this many times its own duration before the next.
CENSUS_SPACING = 10
#: Positions in a stored state of the total score and the revoked flag (every readable format;
#: see streams.scoring.codec.encode_state, held to it by a unit test).
_SCORE_AT, _REVOKED_AT = 5, 8


def score_and_revoked(raw: bytes) -> tuple[int, bool]:
    """An agent's score and whether it is revoked, from its stored bytes without building the
    state (about half the cost of a full decode); anything unexpected is decoded in full, so a
    damaged record raises as :func:`decode_state` does."""
    try:
        fields = orjson.loads(raw)
        score, revoked = fields[_SCORE_AT], fields[_REVOKED_AT]
        if (
            fields[0] in READABLE_FORMATS
            and type(score) is int
            and 0 <= score <= 1000
            and type(revoked) is bool
        ):
            return score, revoked
    except (orjson.JSONDecodeError, TypeError, IndexError, KeyError):
        pass
    state = decode_state(raw)
    return state.score, state.revoked


class Stored:
    """One agent as a scan meets it: its state in memory, or its stored bytes, decoded only
    as far as the caller needs."""

    __slots__ = ("_raw", "_state", "key", "partition")

    def __init__(
        self, key: bytes, partition: int, raw: bytes | None, state: AgentState | None
    ) -> None:
        self.key = key
        self.partition = partition
        self._raw = raw
        self._state = state

    @property
    def did(self) -> str:
        return self.key.decode(errors="replace")

    def state(self) -> AgentState:
        if self._state is None:
            assert self._raw is not None
            self._state = decode_state(self._raw)
        return self._state

    def score_and_revoked(self) -> tuple[int, bool]:
        if self._state is not None:
            return self._state.score, self._state.revoked
        assert self._raw is not None
        return score_and_revoked(self._raw)


@dataclass(slots=True)
class ScanResult:
    """What one scan found, and where it stopped."""

    #: Whatever ``visit`` returned (not None) for each agent, in key order.
    found: list[tuple[str, Any]]
    #: The last key examined when the scan stopped early (limit or budget), else None.
    stopped_at: bytes | None
    #: Partitions read through, owned from start to end (a partition given up meanwhile is not).
    partitions: list[int]
    examined: int = 0


def _merged(
    db_items: Iterator[tuple[bytes, bytes]], held: list[bytes], start: bytes
) -> Iterator[tuple[bytes, bytes | None]]:
    """Keys from ``start`` on, in order: the database's (with their values) and those held in
    memory (value None), each once."""
    memory = ((key, None) for key in held[bisect_left(held, start) :])
    last = None
    for key, value in heapq.merge(db_items, memory, key=lambda item: item[0]):
        if key == last:
            continue
        last = key
        yield key, value


def _tagged(
    partition: int, items: Iterator[tuple[bytes, bytes | None]]
) -> Iterator[tuple[bytes, bytes | None, int]]:
    for key, value in items:
        yield key, value, partition


class AgentScan:
    """Agents of the partitions this worker owns, in key order across partitions."""

    def __init__(
        self,
        store: StateStore,
        owned: Callable[[], frozenset[int]],
        *,
        slice_seconds: float = SLICE_SECONDS,
        pause: Callable[[], Any] | None = None,
        busy: Callable[[], bool] = lambda: False,
    ) -> None:
        self.store = store
        self.owned = owned
        self.slice_seconds = slice_seconds
        self._pause = pause or self._paced
        #: Whether scoring is in a burst of work that the views should let pass (see _paced).
        self._busy = busy
        # One slice at a time across every scan under way: however many requests read at once,
        # scoring waits for one slice at most between two of its turns.
        self._turn = asyncio.Lock()

    async def scan(
        self,
        visit: Callable[[Stored], Any],
        *,
        start: bytes = FIRST_AGENT_KEY,
        limit: int | None = None,
        budget: int | None = None,
    ) -> ScanResult:
        """Call ``visit`` on every agent from ``start`` on, until ``limit`` of them returned
        something other than None or ``budget`` agents were examined; a slice at a time."""
        partitions = sorted(self.owned())
        start = max(start, FIRST_AGENT_KEY)
        # Keys held in memory only are sorted once per scan: few (those changed in the last
        # seconds), while the database is read afresh in each slice.
        held = {p: sorted(k for k in self.store.held_keys(p) if k >= start) for p in partitions}
        result = ScanResult([], None, [])
        position: bytes | None = start
        while position is not None:
            # Held over the pause too: another scan's slice waits until the loop has been round.
            async with self._turn:
                live = self.owned()
                partitions = [p for p in partitions if p in live]
                position = self._slice(partitions, held, position, visit, result, limit, budget)
                if position is not None:
                    await self._pause()
        result.partitions = partitions
        return result

    async def _paced(self) -> None:
        """The pause after a slice: the views' share of the worker's time (VIEWS_SHARE), then,
        while scoring is busy with a burst, up to BUSY_HOLD_SECONDS more. At a window's end every
        agent active in it closes at once (about a second of work for 10,000 agents with full
        histories); revocations that arrive meanwhile queue behind it, and a view's slices
        taken then would lengthen the queue just where it is longest."""
        await asyncio.sleep(self.slice_seconds * _PAUSE_PER_SLICE)
        held_until = time.monotonic() + BUSY_HOLD_SECONDS
        # Polled: being busy is read from the window schedules, which many places change.
        while self._busy() and time.monotonic() < held_until:  # noqa: ASYNC110
            await asyncio.sleep(BUSY_POLL_SECONDS)

    def _agent(self, partition: int, key: bytes, value: bytes | None) -> Stored | None:
        """The agent at ``key`` as the worker holds it now (None: deleted): from memory when
        its newest state is there, else the stored bytes just read."""
        if self.store.is_held(partition, key):
            state = self.store.lookup(partition, key)
            return None if state is None else Stored(key, partition, None, state)
        # Not held, so RocksDB's value is the newest; None: it was held when the scan began
        # and has been deleted since.
        return None if value is None else Stored(key, partition, value, None)

    def _slice(
        self,
        partitions: list[int],
        held: dict[int, list[bytes]],
        start: bytes,
        visit: Callable[[Stored], Any],
        result: ScanResult,
        limit: int | None,
        budget: int | None,
    ) -> bytes | None:
        """Read from ``start`` for one slice; where to go on (None: done)."""
        store = self.store
        streams = [
            _tagged(p, _merged(raw_items(store.db(p), start), held[p], start)) for p in partitions
        ]
        deadline = time.perf_counter() + self.slice_seconds
        for count, (key, value, partition) in enumerate(
            heapq.merge(*streams, key=lambda item: item[0]), 1
        ):
            agent = self._agent(partition, key, value)
            if agent is not None:  # else deleted (confirmed or not)
                result.examined += 1
                try:
                    entry = visit(agent)
                except StateFormatError:
                    entry = None  # damage is the take-over check's business, not a reader's
                if entry is not None:
                    result.found.append((agent.did, entry))
                if (limit is not None and len(result.found) >= limit) or (
                    budget is not None and result.examined >= budget
                ):
                    result.stopped_at = key
                    return None
            if count % KEYS_PER_CLOCK_CHECK == 0 and time.perf_counter() > deadline:
                return key + b"\x00"  # the smallest key after this one
        return None


class Pacer:
    """At most ``per_second`` turns a second, taken in order: fleet-wide pages start no more
    often, however many clients ask. The slices bound what one page costs scoring; this bounds
    how many pages there are (serving a page, HTTP and JSON included, costs the loop a few
    milliseconds besides its slices). Measured (the apiload benchmark), a client reading pages in
    a loop took about 34 a second and raised revocation latency by a fifth at p99."""

    def __init__(self, per_second: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = 1.0 / per_second
        self._clock = clock
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def turn(self) -> None:
        async with self._lock:
            wait = self._next - self._clock()
            if wait > 0:
                await asyncio.sleep(wait)
            self._next = max(self._clock(), self._next) + self.interval


@dataclass(frozen=True, slots=True)
class Counts:
    agents: int
    revoked: int
    at_risk: int
    #: When the census finished (epoch seconds).
    at: float
    #: How long it took (seconds).
    took: float = 0.0
    #: Agents per tier of their score, in the order of :class:`Tier` (highest first).
    by_tier: tuple[int, ...] = ()


class Census:
    """Fleet-wide counts of this worker's agents, taken by an :class:`AgentScan` on demand and
    served from memory in between: a new census once the last is older than ``max_age`` and
    than :data:`CENSUS_SPACING` times its own duration, so that counting never takes more than
    a tenth of the worker's time however many agents it holds."""

    def __init__(
        self,
        scan: AgentScan,
        warning_threshold: Callable[[], int],
        *,
        max_age: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._scan = scan
        self._threshold = warning_threshold
        self.max_age = max_age
        self._clock = clock
        self.last: Counts | None = None
        self._running: asyncio.Task[Counts] | None = None

    async def counts(self, wait: float) -> Counts | None:
        """The latest counts; a new census is started when they are older than ``max_age``,
        and waited for up to ``wait`` seconds (a small fleet is counted within that)."""
        last = self.last
        stale = last is None or self._clock() - last.at > max(
            self.max_age, CENSUS_SPACING * last.took
        )
        if stale and self._running is None:
            self._running = asyncio.ensure_future(self._count())
            self._running.add_done_callback(self._finished)
        if stale and self._running is not None:
            await asyncio.wait({self._running}, timeout=wait)
        return self.last

    def _finished(self, task: asyncio.Task[Counts]) -> None:
        self._running = None
        if not task.cancelled() and task.exception() is None:
            self.last = task.result()

    async def _count(self) -> Counts:
        tally = [0, 0, 0]
        tiers = [0] * len(TIER_ORDER)
        threshold = self._threshold()
        started = time.monotonic()

        def visit(agent: Stored) -> None:
            score, revoked = agent.score_and_revoked()
            tally[0] += 1
            tally[1] += revoked
            tally[2] += not revoked and score < threshold
            tiers[TIER_ORDER.index(tier_for(score))] += 1

        await self._scan.scan(visit)
        took = time.monotonic() - started
        return Counts(tally[0], tally[1], tally[2], self._clock(), took, tuple(tiers))
