"""The five signal topics of each partition, merged in event-time order.

Why: an agent's windows and revocations must depend on its signals only, not on how the five
topics' records happened to interleave on the way in (live, after an outage, or replayed). So each
partition's signals are applied in the order of their times (ties: dimension order, then offset),
as a Kafka Streams task merges its input partitions: among the five topic-partitions' first
records not yet applied, the earliest goes first, and stream time is the latest time applied.

When a topic-partition has nothing buffered, the earliest record of the others might not be the
earliest of all: one stamped earlier may still be on its way. So it is held:

- if that topic-partition is caught up (nothing more on the broker as of the last fetch), until
  ``wait_ms`` after the record's time (or its arrival, if earlier): a signal reaching the worker
  later than that after its timestamp may be applied after a later-stamped one;
- if it is not caught up (records exist that the consumer has not handed over yet), until
  ``fetch_wait_ms`` after that topic-partition was first found empty, which only a stalled fetch
  exceeds. (Not after the record arrived: a record can sit behind thousands in its queue for
  longer than that, while the empty queue's next records are already fetched.)

In a backlog every record is long past its time, so only unfetched records are waited for. Live,
a signal waits until the other four topics have shown something later, at most ``wait_ms``.

A record that is not a valid signal (it goes to the dead-letter topic, and changes no state) is
released as soon as it is first in its topic-partition.

A critical signal may be taken ahead of its turn, with its agent's records that go before it
(:meth:`SignalMerge.take_ahead`, see :mod:`streams.processing.ahead`): a revocation does not wait
for other agents' signals.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from streams.processing.ahead import (
    Ahead,
    Blocked,
    Rises,
    Steps,
    is_critical_candidate,
    still_blocked,
    take_before,
)
from streams.processing.intake import AcceptedSignal, Rejection, SignalIntake
from streams.scoring.model import CRITICAL_SIGNAL_VALUE
from streams.scoring.windows import WindowPolicy

if TYPE_CHECKING:
    from streams.processing.ahead import AppliedAhead

log = logging.getLogger(__name__)

#: Order of a record that is not a valid signal: ahead of every signal time.
_REJECTED = -1


class Arrived(NamedTuple):
    """A signal record as read (the attributes of a consumed record), with what reading it
    found: the signal or why it is refused, its time in the merge, and when it arrived."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int
    #: APPLIED_AHEAD once applied ahead of its turn (streams.processing.ahead).
    signal: AcceptedSignal | Rejection | AppliedAhead
    #: The signal's time as windows and stream time see it (see WindowPolicy.effective_timestamp);
    #: -1 for a rejected record.
    event_ms: int
    dimension: int
    #: Wall-clock time it was read (epoch ms).
    arrived_ms: int


def arrivals(
    records: Sequence[Any],
    intake: SignalIntake,
    windows: WindowPolicy,
    dimension_of: Mapping[str, int],
    now_ms: int,
) -> list[Arrived]:
    """Each consumed signal record read (or refused), with its time in the merge."""
    read = intake.read
    effective = windows.effective_timestamp
    arrived = []
    for r in records:
        dimension = dimension_of[r.topic]
        signal = read(dimension, r.partition, r.key, r.value, r.timestamp, now_ms)
        if isinstance(signal, Rejection):
            event_ms = _REJECTED
        else:
            event_ms = effective(signal.timestamp_ms, now_ms)
        arrived.append(
            Arrived(
                r.topic,
                r.partition,
                r.offset,
                r.key,
                r.value,
                r.timestamp,
                signal,
                event_ms,
                dimension,
                now_ms,
            )
        )
    return arrived


#: Whether a topic-partition (dimension, partition) has nothing more on the broker.
CaughtUp = Callable[[int, int], bool]


class SignalMerge:
    def __init__(
        self,
        dimensions: int,
        *,
        wait_ms: int,
        fetch_wait_ms: int,
        caught_up: CaughtUp = lambda _dimension, _partition: True,
    ) -> None:
        self.dimensions = dimensions
        self.wait_ms = wait_ms
        self.fetch_wait_ms = fetch_wait_ms
        #: Installed by the signal feed, which knows what the consumer has fetched.
        self.caught_up = caught_up
        self._queues: dict[int, list[deque[Arrived]]] = {}
        #: Where the latest time rises along each queue (streams.processing.ahead).
        self._rises: dict[int, list[Rises]] = {}
        #: When each (partition, dimension) not caught up was first found empty (epoch ms).
        self._empty_since: dict[tuple[int, int], int] = {}
        self._forced_logged: set[tuple[int, int]] = set()
        self._turn = 0
        #: Critical signals queued per partition, to be taken ahead of their turn when possible,
        #: each with why it could not be yet (None: not looked at, or out of steps).
        self._critical: dict[int, list[tuple[Arrived, Blocked | None]]] = {}
        #: Partitions with records added since their critical signals were last looked at.
        self._critical_new: set[int] = set()
        #: Earliest wall-clock time (epoch ms) a held record may be released; None: none held.
        self.next_release_ms: int | None = None
        #: Times a record went ahead of a topic-partition that was not caught up and gave
        #: nothing for ``fetch_wait_ms``: its records may then come after later-stamped ones.
        self.forced = 0

    def add(self, records: Iterable[Arrived]) -> None:
        queues = self._queues
        filled = set()
        for record in records:
            partition_queues = queues.get(record.partition)
            if partition_queues is None:
                partition_queues = queues[record.partition] = [
                    deque() for _ in range(self.dimensions)
                ]
                self._rises[record.partition] = [Rises() for _ in range(self.dimensions)]
            partition_queues[record.dimension].append(record)
            self._rises[record.partition][record.dimension].note(record.event_ms)
            filled.add((record.partition, record.dimension))
            if is_critical_candidate(record, CRITICAL_SIGNAL_VALUE):
                self._critical.setdefault(record.partition, []).append((record, None))
        for key in filled:
            if key[0] in self._critical:
                self._critical_new.add(key[0])
            self._empty_since.pop(key, None)
            self._forced_logged.discard(key)

    def take_ahead(self, now_ms: int, max_steps: int = 100_000) -> list[Ahead]:
        """Critical signals whose turn is known, each after its agent's records that go before
        it, to apply now (marked applied in their queues): see :mod:`streams.processing.ahead`.

        Working out a signal's turn looks through the records queued in its partition for its
        agent's (in C loops, tens of nanoseconds a record; the ranks come from where times rise
        along each queue): at most ``max_steps`` records per call, beyond which critical signals
        wait for their turn; a partition is looked at again only once more of its records came
        in, and a signal found blocked only once those could unblock it."""
        taken: list[Ahead] = []
        if not self._critical_new:  # every batch asks; usually there is nothing new to look at
            return taken
        steps = Steps(max_steps)
        for partition in list(self._critical_new):
            self._critical_new.discard(partition)
            criticals = self._critical.get(partition)
            if not criticals:
                continue
            queues = self._queues[partition]

            def caught_up(dimension: int, partition: int = partition) -> bool:
                return self.caught_up(dimension, partition)

            waiting: list[tuple[Arrived, Blocked | None]] = []
            for critical, blocked in criticals:
                if blocked is not None and still_blocked(
                    blocked, queues, critical, now_ms, caught_up
                ):
                    waiting.append((critical, blocked))
                    continue
                ahead = take_before(
                    queues,
                    self._rises[partition],
                    critical,
                    now_ms,
                    caught_up,
                    self.wait_ms,
                    steps,
                )
                if ahead is None or isinstance(ahead, Blocked):
                    waiting.append((critical, ahead))
                else:
                    taken.extend(ahead)
            if waiting:
                self._critical[partition] = waiting
            else:
                del self._critical[partition]
        return taken

    def release(self, now_ms: int, limit: int | None = None) -> list[Arrived]:
        """The records that may go now, in merged order per partition: all of them, or the
        first ``limit`` (then :attr:`next_release_ms` is ``now_ms``: more may go at once)."""
        released: list[Arrived] = []
        next_release: int | None = None
        # Each call starts one partition further on: with a limit, the first partitions would
        # otherwise go first every time, and a backlog of the others wait for them to drain.
        order = list(self._queues.items())
        self._turn = (self._turn + 1) % max(1, len(order))
        for partition, queues in order[self._turn :] + order[: self._turn]:
            room = None if limit is None else limit - len(released)
            if room is not None and room <= 0:
                next_release = now_ms
                break
            held_until = self._release_partition(partition, queues, now_ms, released, room)
            for queue, rises in zip(queues, self._rises[partition], strict=True):
                rises.prune(len(queue))
            if held_until is not None and (next_release is None or held_until < next_release):
                next_release = held_until
        self.next_release_ms = next_release
        return released

    def _release_partition(
        self,
        partition: int,
        queues: list[deque[Arrived]],
        now_ms: int,
        out: list[Arrived],
        room: int | None,
    ) -> int | None:
        """Release what may go (at most ``room``); when the first record held may go (None:
        none held)."""
        # Asked once per call: what the consumer has fetched does not change meanwhile.
        empty_limits: dict[int, int] = {}
        limit = room if room is not None else -1
        released = 0
        while released != limit:
            # The earliest head; queues are looked at in dimension order and only a strictly
            # earlier time wins, so a tie goes to the lower dimension (offsets order a queue).
            best: deque[Arrived] | None = None
            best_ms = 0
            some_empty = False
            for queue in queues:
                if queue:
                    event_ms = queue[0].event_ms
                    if best is None or event_ms < best_ms:
                        best, best_ms = queue, event_ms
                else:
                    some_empty = True
            if best is None:
                return None
            if some_empty and best_ms != _REJECTED:
                held_until = self._hold(partition, queues, best[0], now_ms, empty_limits)
                if held_until is not None:
                    return held_until
            out.append(best.popleft())
            released += 1
        return now_ms

    def _hold(
        self,
        partition: int,
        queues: list[deque[Arrived]],
        head: Arrived,
        now_ms: int,
        caught_up_of: dict[int, int],
    ) -> int | None:
        """Until when ``head`` must wait for the empty topic-partitions (None: it may go)."""
        held_until = 0
        forced = []
        for dimension, queue in enumerate(queues):
            if queue:
                continue
            caught_up = caught_up_of.get(dimension)
            if caught_up is None:
                caught_up = caught_up_of[dimension] = int(self.caught_up(dimension, partition))
            if caught_up:
                until = min(head.event_ms, head.arrived_ms) + self.wait_ms
            else:
                since = self._empty_since.setdefault((partition, dimension), now_ms)
                until = since + self.fetch_wait_ms
                forced.append(dimension)
            held_until = max(held_until, until)
        if now_ms < held_until:
            return held_until
        if forced:
            self.forced += 1
            for dimension in forced:
                self._log_forced(partition, dimension)
        return None

    def _log_forced(self, partition: int, dimension: int) -> None:
        if (partition, dimension) not in self._forced_logged:
            self._forced_logged.add((partition, dimension))  # once per stall: not per record
            log.warning(
                "Signals of partition %d go ahead of its signal topic %d, which has given "
                "nothing for %d ms though not caught up: that topic's records may come after "
                "later-stamped ones",
                partition,
                dimension,
                self.fetch_wait_ms,
            )

    def idle(self, partition: int) -> bool:
        """Nothing of ``partition`` is held, and every one of its topic-partitions is caught up."""
        queues = self._queues.get(partition)
        if queues is not None and any(queues):
            return False
        return all(self.caught_up(d, partition) for d in range(self.dimensions))

    def queued(self, dimension: int, partition: int) -> int:
        queues = self._queues.get(partition)
        return 0 if queues is None else len(queues[dimension])

    def held(self) -> int:
        return sum(len(q) for queues in self._queues.values() for q in queues)

    def forget(self, partitions: Iterable[int] | None = None) -> None:
        """Drop what is held of ``partitions`` (every partition: None); read again from their
        stored positions, it comes back."""
        if partitions is None:
            self._queues.clear()
            self._rises.clear()
            self._empty_since.clear()
            self._critical.clear()
        else:
            gone = set(partitions)
            for partition in gone:
                self._queues.pop(partition, None)
                self._rises.pop(partition, None)
                self._critical.pop(partition, None)
            self._empty_since = {k: v for k, v in self._empty_since.items() if k[0] not in gone}
