"""One agent's scoring state and every transition it goes through.

The worker keeps an :class:`AgentState` per agent in a changelogged table and drives it with three
calls: :func:`apply_signal` for each signal, :func:`close_windows` when the partition's clock passes
a window's end plus grace, and :func:`reinstate`. Each returns what must be published, so the
caller only moves bytes.

Exactly-once effect on top of at-least-once delivery: the state remembers, per signal topic, the
offset of the last signal it applied (every topic an agent's signals arrive on has the agent on the
same partition number, so one offset per dimension suffices). A redelivered signal is recognised and
changes nothing. Outputs are recorded in the state before they are published, so a redelivered
trigger can re-publish them byte for byte.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

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
from streams.scoring.windows import WindowPolicy

N_DIMENSIONS = len(DIMENSIONS)
#: Signals kept per agent to show in its explanation.
EXPLAINED_SIGNALS = 10
_REVOCATION_NAMESPACE = uuid.UUID("6f1c1d52-53c5-4f3e-9a55-3f0b8e3c1a10")


@dataclass(slots=True)
class WindowTally:
    """Signals an agent had in one open window: per dimension, plus late ones it carries."""

    counts: list[int] = field(default_factory=lambda: [0] * N_DIMENSIONS)
    late: int = 0


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
    #: Offset of the tick that last closed windows for this agent, and what it published.
    last_close_tick: int = -1
    last_updates: tuple[ScoreUpdate, ...] = ()
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
    #: The last few signals applied, newest last, for explanations: (dimension, value, source,
    #: timestamp ms).
    recent_signals: list[tuple[int, float, str, int]] = field(default_factory=list)
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

    def dimension_scores(self) -> tuple[float, ...]:
        known = self.scores_known
        for d, score in enumerate(known):
            if score is None:
                known[d] = dimension_score(self.recent[d])
        return tuple(known)  # type: ignore[arg-type]  # every entry was just filled

    def is_at_risk(self, config: ScoringConfig) -> bool:
        return not self.revoked and self.score < config.warning_threshold

    def oldest_open_window(self) -> int | None:
        return min(self.open_windows) if self.open_windows else None


@dataclass(frozen=True, slots=True)
class SignalOutcome:
    applied: bool
    revocation: Revocation | None = None
    #: The signal had been applied before (a redelivery) and was the cause of this revocation,
    #: which must be published again in case the first publication was lost.
    republish: Revocation | None = None


# The outcomes of most signals carry nothing: shared rather than built per signal.
APPLIED = SignalOutcome(applied=True)
SKIPPED = SignalOutcome(applied=False)


def _recalculate(state: AgentState, config: ScoringConfig, now_ms: int) -> Recalculation:
    scores = state.dimension_scores()
    total = total_score(scores, config.weights)
    state.score = total
    state.history.append((now_ms, total))
    if len(state.history) > HISTORY_LENGTH:
        del state.history[: len(state.history) - HISTORY_LENGTH]
    return Recalculation(total, scores)


def revocation_id(agent_did: str, sequence: int) -> str:
    """The same revocation (the agent's n-th) always has the same id, across replays and workers."""
    return str(uuid.uuid5(_REVOCATION_NAMESPACE, f"{agent_did}#{sequence}"))


def _floor_breached(
    state: AgentState, recalculation: Recalculation, config: ScoringConfig
) -> str | None:
    """The reason to revoke under a per-dimension floor, or None when no floor is breached.

    A dimension's level accepted at reinstatement holds until it recovers to its floor.
    """
    accepted = state.reinstated_dimension_scores
    levels = None if accepted is None else list(accepted)
    reason: str | None = None
    for i, floor in enumerate(config.floors):
        if floor is None:
            continue
        score = recalculation.dimension_scores[i]
        level = None if levels is None else levels[i]
        if level is not None and levels is not None:
            if score >= floor.floor:
                levels[i] = None  # recovered: the floor applies again
            if score >= level:
                continue
        if reason is None and score < floor.floor and state.lifetime[i] >= floor.min_signals:
            reason = (
                f"{DIMENSIONS[i].value} score {score:.1f} below its floor {floor.floor:g} "
                f"(after {state.lifetime[i]} signals)"
            )
    if levels is not None:
        accepted = None if all(x is None for x in levels) else tuple(levels)
    state.reinstated_dimension_scores = accepted
    return reason


def _maybe_revoke(
    agent_did: str,
    state: AgentState,
    recalculation: Recalculation,
    config: ScoringConfig,
    now_ms: int,
    trigger: SignalTrigger | WindowTrigger,
) -> Revocation | None:
    if state.revoked:
        return None
    total = recalculation.total_score
    below = total < config.revocation_threshold
    accepted = state.reinstated_at_score
    if accepted is not None:
        if not below:
            state.reinstated_at_score = None  # recovered: the threshold applies again
        elif total >= accepted:
            below = False  # no lower than the operator accepted
    reason = (
        f"Trust score {total} below threshold"
        if below
        else _floor_breached(state, recalculation, config)
    )
    if reason is None:
        return None
    # What the operator accepted belonged to the revocation they lifted.
    state.reinstated_at_score = None
    state.reinstated_dimension_scores = None
    state.revoked = True
    state.revocation_count += 1
    state.revocation = Revocation(
        revocation_id=revocation_id(agent_did, state.revocation_count),
        revoked_at_ms=now_ms,
        total_score=recalculation.total_score,
        threshold=config.revocation_threshold,
        reason=reason,
        dimension_scores=recalculation.dimension_scores,
        trigger=trigger,
        weights_version=config.version,
    )
    return state.revocation


def apply_signal(
    agent_did: str,
    state: AgentState,
    trigger: SignalTrigger,
    value: float,
    signal_ms: int,
    now_ms: int,
    partition_clock_ms: int,
    windows: WindowPolicy,
    config: ScoringConfig,
    source: str = "",
) -> SignalOutcome:
    """Apply one validated signal; windows ending (plus grace) by the partition clock are closed."""
    d = trigger.dimension
    if trigger.offset <= state.applied_offsets[d]:
        previous = state.revocation
        if (
            previous is not None
            and state.revoked
            and isinstance(previous.trigger, SignalTrigger)
            and previous.trigger.same_record(trigger)
        ):
            return SignalOutcome(applied=False, republish=previous)
        return SKIPPED

    state.applied_offsets[d] = trigger.offset
    state.last_signal_at_ms = now_ms
    recent = state.recent[d]
    recent.append(value)
    if len(recent) > RECENT_SIGNALS_PER_DIMENSION:
        del recent[0]
    state.scores_known[d] = None
    state.lifetime[d] += 1
    explained = state.recent_signals
    explained.append((d, value, source, signal_ms))
    if len(explained) > EXPLAINED_SIGNALS:
        del explained[0]

    window_start = windows.start_of(windows.effective_timestamp(signal_ms, now_ms))
    if windows.is_closed(window_start, partition_clock_ms):
        # Late: its window was already reported. Applied all the same, and owed to the window that
        # is open now, whose update counts it in late_signals.
        tally = state.open_windows.setdefault(windows.start_of(partition_clock_ms), WindowTally())
        tally.late += 1
    else:
        state.open_windows.setdefault(window_start, WindowTally()).counts[d] += 1

    if value < CRITICAL_SIGNAL_VALUE:
        recalculation = _recalculate(state, config, now_ms)
        return SignalOutcome(
            applied=True,
            revocation=_maybe_revoke(agent_did, state, recalculation, config, now_ms, trigger),
        )
    return APPLIED


@dataclass(frozen=True, slots=True)
class CloseOutcome:
    updates: tuple[ScoreUpdate, ...]
    revocation: Revocation | None = None


def due_windows(state: AgentState, clock_ms: int, windows: WindowPolicy) -> list[int]:
    return sorted(start for start in state.open_windows if windows.is_closed(start, clock_ms))


def close_windows(
    agent_did: str,
    state: AgentState,
    clock_ms: int,
    tick_offset: int,
    windows: WindowPolicy,
    config: ScoringConfig,
) -> CloseOutcome:
    """Close every open window of the agent that ends (plus grace) by ``clock_ms``.

    One recalculation serves all windows closing together (normally exactly one): the score is the
    agent's score at the moment of closing, over every signal applied so far.
    """
    due = due_windows(state, clock_ms, windows)
    if not due:
        return CloseOutcome(updates=())
    recalculation = _recalculate(state, config, clock_ms)
    revocation = _maybe_revoke(
        agent_did, state, recalculation, config, clock_ms, WindowTrigger(due[-1])
    )
    updates = []
    lifetime = tuple(state.lifetime)
    for start in due:
        tally = state.open_windows.pop(start)
        updates.append(
            ScoreUpdate(
                window_start_ms=start,
                window_end_ms=windows.end_of(start),
                total_score=recalculation.total_score,
                previous_score=state.published_score,
                dimension_scores=recalculation.dimension_scores,
                lifetime_counts=lifetime,
                window_counts=tuple(tally.counts),
                late_signals=tally.late,
                weights_version=config.version,
                computed_at_ms=clock_ms,
                revoked=state.revoked,
                at_risk=state.is_at_risk(config),
            )
        )
        state.published_score = recalculation.total_score
    state.last_close_tick = tick_offset
    state.last_updates = tuple(updates)
    return CloseOutcome(updates=tuple(updates), revocation=revocation)


def reinstate(state: AgentState) -> bool:
    """Lift a revocation. Returns False when the agent was not revoked (nothing changes).

    The operator accepts the agent's current level: its score (as last recalculated) and each
    dimension's score (over every signal applied, as its explanation shows them). See
    :func:`_maybe_revoke` for when it is revoked again.
    """
    if not state.revoked:
        return False
    state.revoked = False
    state.reinstated_at_score = state.score
    state.reinstated_dimension_scores = state.dimension_scores()
    return True


@dataclass(frozen=True, slots=True)
class ReinstateOutcome:
    reinstatement: Reinstatement | None = None
    #: A redelivered command whose reinstatement must be published again.
    republish: Reinstatement | None = None
    refused: str | None = None


def apply_reinstatement(
    agent_did: str,
    state: AgentState,
    command_offset: int,
    now_ms: int,
    requested_by: str,
    reason: str,
    request_id: str | None,
) -> ReinstateOutcome:
    """An operator's reinstate command, applied once however often it is delivered."""
    if command_offset <= state.applied_command_offset:
        previous = state.reinstatement
        if previous is not None and previous.command_offset == command_offset:
            return ReinstateOutcome(republish=previous)
        return ReinstateOutcome()
    state.applied_command_offset = command_offset
    lifted = state.revocation
    if lifted is None or not reinstate(state):
        return ReinstateOutcome(refused="the agent is not revoked")
    state.reinstatement = Reinstatement(
        reinstatement_id=str(
            uuid.uuid5(_REVOCATION_NAMESPACE, f"{agent_did}#reinstated#{state.revocation_count}")
        ),
        reinstated_at_ms=now_ms,
        lifted_revocation_id=lifted.revocation_id,
        requested_by=requested_by,
        reason=reason,
        request_id=request_id,
        command_offset=command_offset,
    )
    return ReinstateOutcome(reinstatement=state.reinstatement)
