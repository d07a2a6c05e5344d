"""Critical signals first: a critical signal applied ahead of other agents' queued signals, with
exactly the effect it has in its turn.

Why: a revocation must not wait behind other agents' ordinary signals. Under load, thousands of
them queue in the merge at times (while windows close, or after a burst), and the merge releases
them in event-time order, so a critical signal would wait for all those stamped before it.

Why applying it early changes nothing: an agent's state depends only on its own signals, in
merged order, and on the stream time before each (whether it is late, which windows it closes).
So once it is known which records the merge will release before a critical signal ``r``, the
records of r's agent among them, then ``r``, can be applied at once, each with the stream time it
would see in its turn: the partition's stream time now, or the latest time among the records
released before it, whichever is later. That set is known when every record that goes before
``r`` has been fetched:

- the merge's order restricted to the queued records is simulated (the earliest head first, ties
  to the lower dimension, as :class:`~streams.processing.merge.SignalMerge` releases them);
- a topic-partition whose queued records all go before ``r`` may hold more that do: it must be
  caught up, and ``r``'s hold over (the merge's rule for a head facing an empty queue).

Otherwise the critical signal waits for its turn like any other.

The records applied ahead stay queued, marked :data:`APPLIED_AHEAD`. Released in their turn, they
move stream time and the stored positions as if applied then, and change nothing else. A crash in
between reads them again from the stored positions, and the agent's applied offsets recognise
them, as any redelivery: the revocation is re-published as it was.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Callable, Iterator
from itertools import accumulate, islice
from operator import itemgetter
from typing import TYPE_CHECKING, NamedTuple

from streams.processing.intake import AcceptedSignal

if TYPE_CHECKING:
    from streams.processing.merge import Arrived


class AppliedAhead:
    """The signal of a record applied ahead of its turn (see the module)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "APPLIED_AHEAD"


APPLIED_AHEAD = AppliedAhead()

#: A critical signal's turn could not be worked out within the steps left: it waits (and is
#: looked at again).
WAIT = None


class Blocked(NamedTuple):
    """Why a critical signal's turn is not known yet: every record queued on the topic-partition
    of ``dimension`` goes before it, and records not fetched yet may too.

    Why it is kept: working a turn out looks at every queued record of the partition, and in a
    backlog a critical signal stays blocked while thousands of records come in. Looking again at
    each batch made every batch cost as much as the backlog, which then drained slower still.
    :func:`still_blocked` tells from the records come in since, looking at those alone."""

    dimension: int
    #: The critical signal's rank (see take_before) when it was looked at.
    rank: int
    #: Offset of that queue's last record then (-1: it was empty).
    last_offset: int
    #: Whether that topic-partition was caught up then.
    caught_up: bool
    #: If it was, until when the merge holds a record facing it empty (epoch ms).
    held_until_ms: int


class Ahead(NamedTuple):
    """A record to apply ahead of its turn."""

    record: Arrived
    #: Stream time before it in its turn is this or the partition's stream time now, whichever
    #: is later; exactly so when this is later than its own time (else any value up to its own
    #: time gives the same result: see take_before).
    stream_floor_ms: int


class Steps:
    """How many more queued records may be looked at (see SignalMerge.take_ahead)."""

    __slots__ = ("left",)

    def __init__(self, left: int) -> None:
        self.left = left


class Rises:
    """Where the latest time along one queue rises: the records stamped later than every record
    appended to the queue before them, as (sequence number, time); the merge keeps them as it
    appends and releases (sequence numbers count the records ever appended to the queue).

    Why: a record's rank is the latest time in its queue up to it, and it is wanted for the
    queues of a partition with tens of thousands of records waiting, once per critical signal.
    Worked out from the rises it costs a binary search instead of a pass over the queue (a
    pass, at about 0.1 us a record, made each critical signal cost milliseconds in a backlog,
    and a backlog with critical signals in it drained slower still)."""

    __slots__ = ("appended", "events", "seqs")

    def __init__(self) -> None:
        self.appended = 0
        self.seqs: list[int] = []
        self.events: list[int] = []

    def note(self, event_ms: int) -> None:
        """A record appended to the queue."""
        events = self.events
        if not events or event_ms > events[-1]:
            self.seqs.append(self.appended)
            events.append(event_ms)
        self.appended += 1

    def prune(self, queued: int) -> None:
        """Forget the rises of released records, but the last (it bounds what was released)."""
        head = self.appended - queued
        drop = bisect_left(self.seqs, head) - 1
        if drop > 0:
            del self.seqs[:drop], self.events[:drop]


def rank_at(queue: deque[Arrived], rises: Rises, index: int) -> int:
    """The latest time in ``queue`` up to its record at ``index``."""
    head = rises.appended - len(queue)
    last = bisect_right(rises.seqs, head + index) - 1
    if last >= 0 and rises.seqs[last] >= head:
        # A rise between the head and it: nothing after the rise is later, nothing before it
        # (released or not) is as late.
        return rises.events[last]
    latest: int = max(map(_EVENT, islice(queue, index + 1)))
    return latest


def count_before(queue: deque[Arrived], rises: Rises, rank: int, strict: bool) -> int:
    """How many of ``queue``'s records are ranked up to ``rank`` (``strict``: below it)."""
    head = rises.appended - len(queue)
    first = bisect_left(rises.seqs, head)
    released_latest = rises.events[first - 1] if first else None
    if released_latest is not None and (
        released_latest >= rank if strict else released_latest > rank
    ):
        # A released record was later: the first record past ``rank`` need not be a rise.
        ranks = list(accumulate(map(_EVENT, queue), max))
        return (bisect_left if strict else bisect_right)(ranks, rank)
    # Otherwise it is the first rise past it: every record before it is no later than ``rank``.
    past = (bisect_left if strict else bisect_right)(rises.events, rank, first)
    return len(queue) if past == len(rises.events) else rises.seqs[past] - head


def is_critical_candidate(record: Arrived, critical_below: float) -> bool:
    signal = record.signal
    return type(signal) is AcceptedSignal and signal.value < critical_below


def take_before(
    queues: list[deque[Arrived]],
    rises: list[Rises],
    critical: Arrived,
    now_ms: int,
    caught_up: Callable[[int], bool],
    wait_ms: int,
    steps: Steps,
) -> list[Ahead] | Blocked | None:
    """``critical`` and its agent's records that the merge releases before it, in merged order,
    marked applied in ``queues``; why not if what goes before it is not known yet
    (:class:`Blocked`), :data:`WAIT` if finding out would take more than the steps left, ``[]``
    if it is no longer queued as it was (released, applied ahead already, or read again). Each
    record queued takes a step.

    How the merge's order is known without running it: a record's turn is set by the latest time
    in its queue up to it (its *rank*), ties to the lower dimension. A record stamped earlier than
    one ahead of it in its queue cannot go before that one, and as soon as that one has gone it
    is the earliest head of all (every other head is later than that one was), so it goes right
    after. So the records before ``critical`` are those of its own queue ahead of it, and, in each
    other queue, those ranked before it: a prefix, since ranks only grow along a queue.

    The stream time a record sees in its turn is its rank before it in its own queue, when that
    is later than its own time (it sits behind a later-stamped record, which went just before
    it). Otherwise every record before it is stamped no later than it is, and apply_signal gives
    the same result for any stream time up to its own time.
    """
    dimension = critical.dimension
    own = queues[dimension]
    if not own or own[0].offset > critical.offset:
        return []
    queued = sum(len(queue) for queue in queues)
    if queued > steps.left:
        steps.left = 0
        return WAIT
    steps.left -= queued
    # The work is done by C loops over the queues (map, accumulate, bisect, list.index): a
    # critical signal may sit behind tens of thousands of records.
    at = bisect_left(own, critical.offset, key=_OFFSET)
    if at == len(own) or own[at].offset != critical.offset or own[at].signal is APPLIED_AHEAD:
        return []
    critical_rank = rank_at(own, rises[dimension], at)
    # Per queue, how many of its records go before the critical signal. Every queue is checked
    # before any is searched for the agent: a blocked signal costs less.
    before_of: list[int] = []
    for d, queue in enumerate(queues):
        if d == dimension:
            before_of.append(at)
            continue
        # Ties go to the lower dimension.
        before = count_before(queue, rises[d], critical_rank, strict=d > dimension)
        if before == len(queue):
            # Records of this topic-partition not fetched yet might go before it: it may go only
            # when the merge would release it facing this queue empty. The merge holds a head
            # until min(its time, its arrival) + wait_ms; for every record up to this one that
            # is at most min(its rank, now), which stands for them all.
            held_until = min(critical_rank, now_ms) + wait_ms
            is_caught_up = caught_up(d)
            if not (is_caught_up and now_ms >= held_until):
                last_offset = queue[-1].offset if queue else -1
                return Blocked(d, critical_rank, last_offset, is_caught_up, held_until)
        before_of.append(before)
    agent = critical.key
    # (rank, dimension, index, record, rank before it in its queue)
    found: list[tuple[int, int, int, Arrived, int]] = []
    for d, (queue, before) in enumerate(zip(queues, before_of, strict=True)):
        for index in _indexes_of(list(map(_KEY, islice(queue, before))), agent):
            record = queue[index]
            if type(record.signal) is AcceptedSignal:
                rank = rank_at(queue, rises[d], index)
                floor = rank_at(queue, rises[d], index - 1) if index else -1
                found.append((rank, d, index, record, floor))
    found.sort(key=lambda item: (item[0], item[1], item[2]))
    floor = rank_at(own, rises[dimension], at - 1) if at else -1
    found.append((critical_rank, dimension, at, critical, floor))
    for _, d, index, record, _ in found:
        queues[d][index] = record._replace(signal=APPLIED_AHEAD)
    return [Ahead(record, before) for _, _, _, record, before in found]


def still_blocked(
    blocked: Blocked,
    queues: list[deque[Arrived]],
    critical: Arrived,
    now_ms: int,
    caught_up: Callable[[int], bool],
) -> bool:
    """Whether what :func:`take_before` found holds still, from what changed since: looks only at
    the records come in since on the blocking topic-partition.

    It may say so though a record before the critical signal was released meanwhile and its turn
    could now be known: the signal then waits until more records come in, or for its turn, which
    changes only when, never what, it is applied. Not once it was released in its turn (then
    take_before finds it gone)."""
    own = queues[critical.dimension]
    if not own or own[0].offset > critical.offset:
        return False
    d = blocked.dimension
    if caught_up(d) and (not blocked.caught_up or now_ms >= blocked.held_until_ms):
        return False
    rank = blocked.rank
    tie_goes_after = d > critical.dimension
    for record in reversed(queues[d]):
        if record.offset <= blocked.last_offset:
            break
        # A record come in since goes after the critical signal: the queue is no longer all
        # before it (its rank is at least its time, and those ahead of it went before).
        if record.event_ms > rank or (tie_goes_after and record.event_ms == rank):
            return False
    return True


_OFFSET = itemgetter(2)
_KEY = itemgetter(3)
_EVENT = itemgetter(7)


def _indexes_of(items: list[object], value: object) -> Iterator[int]:
    index = -1
    while True:
        try:
            index = items.index(value, index + 1)
        except ValueError:
            return
        yield index
