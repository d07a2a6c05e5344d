"""One agent's scoring state and every transition it goes through.

The worker keeps an :class:`AgentState` per agent and drives it with :func:`apply_signal` for each
signal, :func:`close_windows` when the partition's clock passes a window's end plus grace, and
:func:`reinstate`. Each returns what must be published, so the caller only moves bytes.

Exactly-once effect on top of at-least-once delivery: the state remembers, per signal topic, the
offset of the last signal it applied (every topic an agent's signals arrive on has the agent on the
same partition number, so one offset per dimension suffices). A redelivered signal is recognised and
changes nothing. Outputs are recorded in the state before they are published, so a redelivered
trigger can re-publish them byte for byte.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from streams.scoring.explained import explained_entry
from streams.scoring.formulas import dimension_score, total_score
from streams.scoring.model import (
    CRITICAL_SIGNAL_VALUE,
    DIMENSIONS,
    HISTORY_LENGTH,
    NEW_AGENT_SCORE,
    RECENT_SIGNALS_PER_DIMENSION,
    ScoringConfig,
)
from streams.scoring.records import Reinstatement as Reinstatement
from streams.scoring.records import Revocation as Revocation
from streams.scoring.records import ScoreUpdate as ScoreUpdate
from streams.scoring.records import SignalTrigger as SignalTrigger
from streams.scoring.records import WindowTrigger as WindowTrigger
from streams.scoring.revoking import ReinstateOutcome as ReinstateOutcome
from streams.scoring.revoking import apply_reinstatement as apply_reinstatement
from streams.scoring.revoking import maybe_revoke
from streams.scoring.revoking import reinstate as reinstate
from streams.scoring.revoking import revocation_id as revocation_id
from streams.scoring.windows import WindowPolicy

N_DIMENSIONS = len(DIMENSIONS)
#: Signals kept per agent to show in its explanation.
EXPLAINED_SIGNALS = 10
#: The configuration in force at a time (epoch ms): see ``ConfigFollower.at``.
ConfigAt = Callable[[int], ScoringConfig]


@dataclass(slots=True)
class WindowTally:
    """Signals an agent had in one open window: per dimension, plus late ones it carries."""

    counts: list[int] = field(default_factory=lambda: [0] * N_DIMENSIONS)
    late: int = 0
    #: Per dimension, its score and lifetime count as of the window's end, kept once a signal of
    #: that dimension stamped at or after the end is applied (None: none yet, so the dimension's
    #: score and count now are those at the end). A window's update is as of its end, while
    #: signals stamped after it arrive (within the grace period, or before it is closed).
    ends: list[list[float] | None] | None = None


@dataclass(slots=True)
class Recalculation:
    total_score: int
    dimension_scores: tuple[float, ...]


@dataclass(slots=True)
class AgentState:
    recent: list[list[float]] = field(default_factory=lambda: [[] for _ in DIMENSIONS])
    lifetime: list[int] = field(default_factory=lambda: [0] * N_DIMENSIONS)
    #: Offset of the last applied signal per dimension topic (-1: none yet).
    applied_offsets: list[int] = field(default_factory=lambda: [-1] * N_DIMENSIONS)
    open_windows: dict[int, WindowTally] = field(default_factory=dict)
    score: int = NEW_AGENT_SCORE
    #: Total of the last published window update: the next update's previous_score.
    published_score: int = NEW_AGENT_SCORE
    #: (epoch ms, total) per recalculation, oldest first, at most HISTORY_LENGTH.
    history: list[tuple[int, int]] = field(default_factory=list)
    revoked: bool = False
    revocation_count: int = 0
    revocation: Revocation | None = None
    #: What last closed windows for this agent, and what it published: the offset of a tick
    #: (-1: not a tick), or the signal (dimension, offset) that found them closed.
    last_close_tick: int = -1
    last_updates: tuple[ScoreUpdate, ...] = ()
    last_close_signal: tuple[int, int] | None = None
    #: Offset of the last operator command applied (commands topic), and the last reinstatement.
    applied_command_offset: int = -1
    reinstatement: Reinstatement | None = None
    #: Set by a reinstatement: the operator accepted the agent's level, so while the score is
    #: below the threshold only a fall below this one revokes. Cleared once the score is back at
    #: or above the threshold (from then on the threshold applies), and by a revocation.
    reinstated_at_score: int | None = None
    #: Set by a reinstatement: each dimension's score then. A floor revokes only when its
    #: dimension falls below that level, or falls below the floor after having recovered to it
    #: (its entry is then None). Cleared by a revocation, and once every entry is None.
    reinstated_dimension_scores: tuple[float | None, ...] | None = None
    #: The last few signals applied, newest last, for explanations (streams.scoring.explained).
    recent_signals: list[bytes] = field(default_factory=list)
    #: When (epoch ms) the last signal was applied, by the worker's clock; 0: none yet. Not the
    #: signal's own timestamp, which a producer could forge into the future to keep it alive.
    last_signal_at_ms: int = 0
    #: Each dimension's score over ``recent`` as it is now, or None until computed again: a
    #: recalculation then only computes the dimensions that had signals since the last one. Not
    #: stored (a decoded state starts empty) and not part of equality. ``recent`` is changed only
    #: by :func:`apply_signal`, which clears its dimension's entry.
    scores_known: list[float | None] = field(
        default_factory=lambda: [None] * N_DIMENSIONS, compare=False, repr=False
    )
    #: What the state codec last wrote for each dimension's ``recent`` values (entry d: the list
    #: written, or None; entry N_DIMENSIONS + d: its JSON; kept in place, making no object for
    #: the collector to walk) and for ``history`` (the list, its JSON). Between two checkpoints a
    #: signal changes one dimension's values and a window close the history: the rest is reused
    #: (a full state's encoding costs a third as much). A list replaced is written afresh; one
    #: changed in place must have its entry cleared: :func:`apply_signal` does for its dimension,
    #: :func:`_record_history` for the history. Not stored, not part of equality.
    recent_written: list[Any] = field(
        default_factory=lambda: [None] * (2 * N_DIMENSIONS), compare=False, repr=False
    )
    history_written: tuple[list[tuple[int, int]], bytes] | None = field(
        default=None, compare=False, repr=False
    )

    def dimension_scores(self) -> tuple[float, ...]:
        return tuple(map(self.score_of_dimension, range(N_DIMENSIONS)))

    def score_of_dimension(self, d: int) -> float:
        """One dimension's score, alone: a window's end keeps each, for every agent at once."""
        score = self.scores_known[d]
        if score is None:
            score = self.scores_known[d] = dimension_score(self.recent[d])
        return score

    def is_at_risk(self, config: ScoringConfig) -> bool:
        return not self.revoked and self.score < config.warning_threshold

    def oldest_open_window(self) -> int | None:
        return min(self.open_windows) if self.open_windows else None


@dataclass(frozen=True, slots=True)
class CloseOutcome:
    updates: tuple[ScoreUpdate, ...]
    revocation: Revocation | None = None


@dataclass(frozen=True, slots=True)
class SignalOutcome:
    applied: bool
    revocation: Revocation | None = None
    #: The signal had been applied before (a redelivery) and was the cause of this revocation,
    #: which must be published again in case the first publication was lost.
    republish: Revocation | None = None
    #: Windows closed before the signal was applied (stream time had passed their end plus
    #: grace); for a redelivery, those it closed then, to be published again.
    closed: CloseOutcome | None = None


# The outcomes of most signals carry nothing: shared rather than built per signal.
APPLIED = SignalOutcome(applied=True)
SKIPPED = SignalOutcome(applied=False)


def _record_history(state: AgentState, at_ms: int, total: int) -> None:
    """Add a recalculation to the history, in time order (a window's score, taken at its end,
    is recorded when the window closes, after any critical signal of the next window), and make
    the agent's score the latest one in time."""
    history = state.history
    if not history or history[-1][0] <= at_ms:
        history.append((at_ms, total))
    else:
        insort(history, (at_ms, total), key=itemgetter(0))
    if len(history) > HISTORY_LENGTH:
        del history[: len(history) - HISTORY_LENGTH]
    state.history_written = None
    state.score = history[-1][1]


def _recalculate(state: AgentState, config: ScoringConfig, at_ms: int) -> Recalculation:
    scores = state.dimension_scores()
    total = total_score(scores, config.weights)
    _record_history(state, at_ms, total)
    return Recalculation(total, scores)


def _redelivered(state: AgentState, trigger: SignalTrigger) -> SignalOutcome:
    """A signal applied before: what it caused, to be published again (the first publication
    may have been lost in a crash), or nothing."""
    previous = state.revocation
    republish = (
        previous
        if previous is not None
        and state.revoked
        and isinstance(previous.trigger, SignalTrigger)
        and previous.trigger.same_record(trigger)
        else None
    )
    closed = None
    if state.last_close_signal == (trigger.dimension, trigger.offset) and state.last_updates:
        closed = CloseOutcome(state.last_updates, revoked_by_close(state))
    if republish is None and closed is None:
        return SKIPPED
    return SignalOutcome(applied=False, republish=republish, closed=closed)


def _keep_scores_at_ends(state: AgentState, d: int, event_ms: int, size_ms: int) -> None:
    """Each open window that ends at or before ``event_ms`` keeps dimension ``d``'s score and
    count as they are now (before the signal of that dimension stamped then is applied), if it
    has none yet."""
    for start, tally in state.open_windows.items():
        if event_ms >= start + size_ms:
            ends = tally.ends
            if ends is None:
                ends = tally.ends = [None] * N_DIMENSIONS
            if ends[d] is None:
                ends[d] = [state.score_of_dimension(d), state.lifetime[d]]


def apply_signal(
    agent_did: str,
    state: AgentState,
    trigger: SignalTrigger,
    value: float,
    signal_ms: int,
    now_ms: int,
    stream_time_ms: int,
    windows: WindowPolicy,
    config: ScoringConfig,
    source: str = "",
    *,
    config_at: ConfigAt | None = None,
) -> SignalOutcome:
    """Apply one validated signal at its place in event time.

    ``stream_time_ms`` is how far the partition's stream time had advanced before this signal.
    Windows that it, or this signal's own time, has taken past their end plus grace are closed
    first (a window closes before anything stamped after its end plus grace); each open window
    that ends at or before the signal keeps the signal's dimension's score as of its end. A
    critical signal is judged with the configuration in force at its time.
    """
    d = trigger.dimension
    if trigger.offset <= state.applied_offsets[d]:
        return _redelivered(state, trigger)
    event_ms = windows.effective_timestamp(signal_ms, now_ms)
    closed = None
    open_windows = state.open_windows
    # On the hot path: usually one window is open and nothing is due or ends before the signal,
    # which two comparisons with the oldest open window tell.
    if open_windows:
        size = windows.size_ms
        closes_by = stream_time_ms if stream_time_ms > event_ms else event_ms
        # A critical signal is judged after the windows due before it (their closes may revoke
        # first); the others leave due windows to the closing turns, which give the same
        # updates, as of each window's end, whenever they run.
        first_due_at = min(open_windows) + size + windows.grace_ms
        if value < CRITICAL_SIGNAL_VALUE and closes_by >= first_due_at:
            closed = close_windows(
                agent_did,
                state,
                closes_by,
                -1,
                windows,
                config,
                config_at=config_at,
                by_signal=(d, trigger.offset),
            )
        if open_windows and event_ms >= min(open_windows) + size:
            _keep_scores_at_ends(state, d, event_ms, size)

    state.applied_offsets[d] = trigger.offset
    state.last_signal_at_ms = now_ms
    recent = state.recent[d]
    recent.append(value)
    if len(recent) > RECENT_SIGNALS_PER_DIMENSION:
        del recent[0]
    state.scores_known[d] = None
    state.recent_written[d] = None
    state.lifetime[d] += 1
    explained = state.recent_signals
    explained.append(explained_entry(d, value, source, signal_ms))
    if len(explained) > EXPLAINED_SIGNALS:
        del explained[0]

    window_start = windows.start_of(event_ms)
    # Late (stream time had passed its window's end plus grace): applied all the same, and
    # counted by the window open at stream time. Only a window's first signal builds its tally.
    late = windows.is_closed(window_start, stream_time_ms)
    start = windows.start_of(stream_time_ms) if late else window_start
    tally = open_windows.get(start) or open_windows.setdefault(start, WindowTally())
    if late:
        tally.late += 1
    else:
        tally.counts[d] += 1

    if value < CRITICAL_SIGNAL_VALUE:
        in_force = config if config_at is None else config_at(event_ms)
        recalculation = _recalculate(state, in_force, event_ms)
        return SignalOutcome(
            applied=True,
            revocation=maybe_revoke(agent_did, state, recalculation, in_force, event_ms, trigger),
            closed=closed,
        )
    return APPLIED if closed is None else SignalOutcome(applied=True, closed=closed)


def due_windows(state: AgentState, clock_ms: int, windows: WindowPolicy) -> list[int]:
    return sorted(start for start in state.open_windows if windows.is_closed(start, clock_ms))


def _as_of_end(state: AgentState, tally: WindowTally) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """The window's dimension scores and lifetime counts as of its end."""
    scores = state.dimension_scores()
    lifetime = tuple(state.lifetime)
    ends = tally.ends
    if ends is None:
        return scores, lifetime
    return (
        tuple(scores[d] if end is None else end[0] for d, end in enumerate(ends)),
        tuple(lifetime[d] if end is None else int(end[1]) for d, end in enumerate(ends)),
    )


def close_windows(
    agent_did: str,
    state: AgentState,
    clock_ms: int,
    tick_offset: int,
    windows: WindowPolicy,
    config: ScoringConfig,
    *,
    config_at: ConfigAt | None = None,
    by_signal: tuple[int, int] | None = None,
) -> CloseOutcome:
    """Close every open window of the agent that ends (plus grace) by ``clock_ms``, oldest first.

    Each window's update carries the agent's score as of the window's end (every signal of the
    window applied, none stamped later), with the configuration in force at that end, and says
    whether the agent is revoked once that score has been judged. What closed them is recorded
    (the tick at ``tick_offset``, or the signal ``by_signal``: dimension and offset), so that a
    redelivery of it publishes the same updates again.
    """
    due = due_windows(state, clock_ms, windows)
    if not due:
        return CloseOutcome(updates=())
    updates = []
    revocation = None
    for start in due:
        tally = state.open_windows.pop(start)
        end = windows.end_of(start)
        closed_at = windows.closes_at(start)
        in_force = config if config_at is None else config_at(end)
        scores, lifetime = _as_of_end(state, tally)
        total = total_score(scores, in_force.weights)
        _record_history(state, end, total)
        judged = maybe_revoke(
            agent_did,
            state,
            Recalculation(total, scores),
            in_force,
            closed_at,
            WindowTrigger(start),
        )
        revocation = judged or revocation
        updates.append(
            ScoreUpdate(
                window_start_ms=start,
                window_end_ms=end,
                total_score=total,
                previous_score=state.published_score,
                dimension_scores=scores,
                lifetime_counts=lifetime,
                window_counts=tuple(tally.counts),
                late_signals=tally.late,
                weights_version=in_force.version,
                computed_at_ms=closed_at,
                revoked=state.revoked,
                at_risk=not state.revoked and total < in_force.warning_threshold,
            )
        )
        state.published_score = total
    state.last_close_tick = tick_offset
    state.last_close_signal = by_signal
    state.last_updates = tuple(updates)
    return CloseOutcome(updates=tuple(updates), revocation=revocation)


def revoked_by_close(state: AgentState) -> Revocation | None:
    """The agent's standing revocation, when its last window close caused it."""
    revocation = state.revocation
    if (
        revocation is not None
        and state.revoked
        and isinstance(revocation.trigger, WindowTrigger)
        and any(u.window_start_ms == revocation.trigger.window_start_ms for u in state.last_updates)
    ):
        return revocation
    return None
