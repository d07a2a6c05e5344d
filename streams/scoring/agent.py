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

from .formulas import dimension_score, total_score
from .model import (
    CRITICAL_SIGNAL_VALUE,
    DIMENSIONS,
    HISTORY_LENGTH,
    NEW_AGENT_SCORE,
    RECENT_SIGNALS_PER_DIMENSION,
    ScoringConfig,
)
from .windows import WindowPolicy

N_DIMENSIONS = len(DIMENSIONS)
#: Signals kept per agent to show in its explanation.
EXPLAINED_SIGNALS = 10
_REVOCATION_NAMESPACE = uuid.UUID("6f1c1d52-53c5-4f3e-9a55-3f0b8e3c1a10")


@dataclass(slots=True)
class WindowTally:
    """Signals an agent had in one open window: per dimension, plus late ones it carries."""

    counts: list[int] = field(default_factory=lambda: [0] * N_DIMENSIONS)
    late: int = 0


# Not frozen, unlike its neighbours: one is built per signal, and a frozen dataclass's __init__
# costs three times as much. Nothing mutates a trigger once built.
@dataclass(slots=True)
class SignalTrigger:
    """Where a signal was read from: what a revocation names as its cause."""

    dimension: int
    partition: int
    offset: int
    signal_id: str | None = None

    def same_record(self, other: SignalTrigger) -> bool:
        return (self.dimension, self.partition, self.offset) == (
            other.dimension,
            other.partition,
            other.offset,
        )


@dataclass(frozen=True, slots=True)
class WindowTrigger:
    window_start_ms: int


@dataclass(frozen=True, slots=True)
class Revocation:
    revocation_id: str
    revoked_at_ms: int
    total_score: int
    threshold: int
    reason: str
    dimension_scores: tuple[float, ...]
    trigger: SignalTrigger | WindowTrigger
    weights_version: int


@dataclass(frozen=True, slots=True)
class Reinstatement:
    """An operator lifted a revocation: the audit record, kept to be re-published identically."""

    reinstatement_id: str
    reinstated_at_ms: int
    lifted_revocation_id: str
    requested_by: str
    reason: str
    request_id: str | None
    command_offset: int


@dataclass(frozen=True, slots=True)
class ScoreUpdate:
    """Everything a window's score update says, frozen at the moment the window closed."""

    window_start_ms: int
    window_end_ms: int
    total_score: int
    previous_score: int
    dimension_scores: tuple[float, ...]
    lifetime_counts: tuple[int, ...]
    window_counts: tuple[int, ...]
    late_signals: int
    weights_version: int
    computed_at_ms: int
    revoked: bool
    at_risk: bool

    @property
    def signals_in_window(self) -> int:
        return sum(self.window_counts)


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
    #: Set by a reinstatement while the score is still below the threshold: the operator accepted
    #: that level, so only a fall below it (or below the threshold again after recovering)
    #: revokes. Cleared once the score is back at or above the threshold.
    reinstated_at_score: int | None = None
    #: The last few signals applied, newest last, for explanations: (dimension, value, source,
    #: timestamp ms).
    recent_signals: list[tuple[int, float, str, int]] = field(default_factory=list)

    def dimension_scores(self) -> tuple[float, ...]:
        return tuple(dimension_score(values) for values in self.recent)

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
    """The reason to revoke under a per-dimension floor, or None when no floor is breached."""
    for i, floor in enumerate(config.floors):
        if floor is None or state.lifetime[i] < floor.min_signals:
            continue
        score = recalculation.dimension_scores[i]
        if score < floor.floor:
            return (
                f"{DIMENSIONS[i].value} score {score:.1f} below its floor {floor.floor:g} "
                f"(after {state.lifetime[i]} signals)"
            )
    return None


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
    accepted = state.reinstated_at_score
    if accepted is not None:
        if recalculation.total_score >= config.revocation_threshold:
            state.reinstated_at_score = None
        elif recalculation.total_score >= accepted:
            return None
    reason: str | None = None
    if recalculation.total_score < config.revocation_threshold:
        reason = f"Trust score {recalculation.total_score} below threshold"
    else:
        reason = _floor_breached(state, recalculation, config)
    if reason is None:
        return None
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
    recent = state.recent[d]
    recent.append(value)
    if len(recent) > RECENT_SIGNALS_PER_DIMENSION:
        del recent[0]
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
    """Lift a revocation. Returns False when the agent was not revoked (nothing changes)."""
    if not state.revoked:
        return False
    state.revoked = False
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
    state.reinstated_at_score = state.score
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
