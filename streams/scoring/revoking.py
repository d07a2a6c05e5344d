"""Revocation and reinstatement: when a recalculated agent is revoked, and how an operator lifts it.

Kept apart from the state machine (:mod:`.agent`, which calls these and re-exports them) so each
module reads in one sitting.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from streams.scoring.model import DIMENSIONS, ScoringConfig
from streams.scoring.records import Reinstatement, Revocation, SignalTrigger, WindowTrigger

if TYPE_CHECKING:
    from streams.scoring.agent import AgentState, Recalculation

_REVOCATION_NAMESPACE = uuid.UUID("6f1c1d52-53c5-4f3e-9a55-3f0b8e3c1a10")


def revocation_id(agent_did: str, sequence: int) -> str:
    """The same revocation (the agent's n-th) always has the same id, across replays and workers."""
    return str(uuid.uuid5(_REVOCATION_NAMESPACE, f"{agent_did}#{sequence}"))


def floor_breached(
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


def maybe_revoke(
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
        else floor_breached(state, recalculation, config)
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


def reinstate(state: AgentState) -> bool:
    """Lift a revocation. Returns False when the agent was not revoked (nothing changes).

    The operator accepts the agent's current level: its score (as last recalculated) and each
    dimension's score (over every signal applied, as its explanation shows them). See
    :func:`maybe_revoke` for when it is revoked again.
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
