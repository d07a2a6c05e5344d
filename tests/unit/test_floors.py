"""Per-dimension revocation floors: off by default, and when set they revoke whatever the total;
a reinstated agent is revoked by a floor again only after a further fall."""

from __future__ import annotations

import pytest

from streams.scoring.agent import (
    AgentState,
    SignalTrigger,
    apply_reinstatement,
    apply_signal,
    close_windows,
    revocation_id,
)
from streams.scoring.codec import decode_state, encode_state
from streams.scoring.model import (
    DEFAULT_WEIGHTS,
    DimensionFloor,
    InvalidScoringConfig,
    ScoringConfig,
)
from streams.scoring.windows import WindowPolicy

WINDOWS = WindowPolicy(size_ms=30_000, grace_ms=5_000)
SECURITY = 3


def config_with(floor: DimensionFloor | None) -> ScoringConfig:
    floors = [None] * 5
    floors[SECURITY] = floor
    return ScoringConfig.validated(DEFAULT_WEIGHTS, floors=floors)


def fail_security(state: AgentState, config: ScoringConfig, count: int):  # type: ignore[no-untyped-def]
    outcomes = []
    for offset in range(count):
        outcomes.append(
            apply_signal(
                "did:mesh:one-bad-dimension",
                state,
                SignalTrigger(SECURITY, 0, offset),
                0.0,
                1_000,
                1_000,
                0,
                WINDOWS,
                config,
            )
        )
    return outcomes


def test_without_a_floor_failing_one_dimension_never_revokes() -> None:
    state = AgentState()
    outcomes = fail_security(state, config_with(None), 50)
    assert not any(o.revocation for o in outcomes)
    assert state.score == 375 and not state.revoked


def test_a_floor_revokes_once_the_minimum_signal_count_is_reached() -> None:
    state = AgentState()
    outcomes = fail_security(state, config_with(DimensionFloor(40.0, min_signals=3)), 5)
    revocations = [o.revocation for o in outcomes if o.revocation]
    assert len(revocations) == 1
    assert outcomes[2].revocation is revocations[0]  # the third signal, not earlier
    reason = revocations[0].reason
    assert reason == "security_posture score 0.0 below its floor 40 (after 3 signals)"
    assert revocations[0].total_score == 375  # far above the threshold: the floor did it


def test_a_floor_is_also_checked_when_a_window_closes() -> None:
    state = AgentState()
    config = config_with(DimensionFloor(60.0, min_signals=1))
    apply_signal(
        "did:mesh:slow-drift",
        state,
        SignalTrigger(SECURITY, 0, 0),
        0.5,
        1_000,
        1_000,
        0,
        WINDOWS,
        config,
    )  # 0.5 is not critical: no recalculation until the window closes
    assert not state.revoked
    outcome = close_windows("did:mesh:slow-drift", state, 40_000, 0, WINDOWS, config)
    assert outcome.revocation is not None
    assert "below its floor 60" in outcome.revocation.reason


@pytest.mark.parametrize(
    ("floor", "problem"),
    [(DimensionFloor(120.0), r"must be in \[0, 100\]"), (DimensionFloor(10.0, 0), "at least 1")],
)
def test_invalid_floors_are_rejected(floor: DimensionFloor, problem: str) -> None:
    with pytest.raises(InvalidScoringConfig, match=problem):
        config_with(floor)


# ------------------------------------------------- reinstatement of an agent a floor revoked

AGENT = "did:mesh:floored"
FLOOR = DimensionFloor(40.0, min_signals=3)


def one(state: AgentState, config: ScoringConfig, dimension: int, offset: int, value: float):  # type: ignore[no-untyped-def]
    return apply_signal(
        AGENT, state, SignalTrigger(dimension, 0, offset), value, 1_000, 1_000, 0, WINDOWS, config
    )


def revoked_by_the_floor_and_reinstated(config: ScoringConfig) -> tuple[AgentState, str]:
    state = AgentState()
    outcomes = fail_security(state, config, 3)
    first = outcomes[-1].revocation
    assert first is not None and "below its floor 40" in first.reason
    outcome = apply_reinstatement(AGENT, state, 0, 2_000, "secops", "reviewed", None)
    assert outcome.reinstatement is not None and not state.revoked
    assert state.reinstated_dimension_scores == state.dimension_scores()
    return state, first.revocation_id


def test_a_reinstated_agent_is_not_revoked_again_by_the_floor_without_a_further_fall() -> None:
    config = config_with(FLOOR)
    state, _ = revoked_by_the_floor_and_reinstated(config)
    # Window after window closes with the security score still 0.0, below its floor of 40: the
    # operator accepted that level.
    for i in range(5):
        apply_signal(
            AGENT, state, SignalTrigger(0, 0, i), 0.9, 40_000 * i, 40_000 * i, 0, WINDOWS, config
        )
        outcome = close_windows(AGENT, state, 40_000 * (i + 1), i, WINDOWS, config)
        assert outcome.updates and outcome.revocation is None
        assert outcome.updates[0].dimension_scores[SECURITY] == 0.0
    assert not state.revoked and state.revocation_count == 1
    # Critical signals in other dimensions, the total staying above the threshold: not revoked.
    assert one(state, config, 4, 0, 0.2).revocation is None and not state.revoked


def test_a_further_fall_below_the_accepted_level_revokes_with_a_new_revocation() -> None:
    config = config_with(FLOOR)
    state = AgentState()
    # Security at 30 (below the floor of 40) when revoked and reinstated.
    for offset, value in enumerate((0.5, 0.2, 0.2)):
        one(state, config, SECURITY, offset, value)
    assert state.revoked and state.dimension_scores()[SECURITY] < 40
    first_id = state.revocation.revocation_id if state.revocation else None
    apply_reinstatement(AGENT, state, 0, 2_000, "secops", "reviewed", None)
    accepted = state.dimension_scores()[SECURITY]
    # A window closing with security where it was accepted: no revocation.
    assert close_windows(AGENT, state, 40_000, 0, WINDOWS, config).revocation is None
    # A critical signal that takes it lower (recalculated at once): revoked.
    outcome = one(state, config, SECURITY, 3, 0.29)
    assert state.dimension_scores()[SECURITY] < accepted
    assert outcome.revocation is not None and state.revoked
    assert outcome.revocation.revocation_id != first_id
    assert outcome.revocation.revocation_id == revocation_id(AGENT, 2)
    assert "security_posture score" in outcome.revocation.reason


def test_after_recovering_to_its_floor_a_dimension_falling_below_it_revokes() -> None:
    config = config_with(FLOOR)
    state, first_id = revoked_by_the_floor_and_reinstated(config)
    for offset in range(3, 13):
        one(state, config, SECURITY, offset, 1.0)
    close_windows(AGENT, state, 40_000, 0, WINDOWS, config)
    assert state.dimension_scores()[SECURITY] >= 40 and not state.revoked
    accepted = state.reinstated_dimension_scores
    assert accepted is not None and accepted[SECURITY] is None  # recovered: the floor holds again
    offset = 13
    outcome = None
    while outcome is None or outcome.revocation is None:
        outcome = one(state, config, SECURITY, offset, 0.0)
        offset += 1
    assert state.dimension_scores()[SECURITY] < 40  # below the floor, above what was accepted
    assert outcome.revocation is not None
    assert outcome.revocation.revocation_id == revocation_id(AGENT, 2) != first_id


def test_reinstatement_under_floors_replays_identically() -> None:
    def run() -> list[object]:
        config = config_with(FLOOR)
        state, _ = revoked_by_the_floor_and_reinstated(config)
        seen: list[object] = []
        for i, value in enumerate((0.0, 0.9, 0.1, 1.0, 0.0, 0.0, 0.2)):
            seen.append(one(state, config, SECURITY, 3 + i, value))
            seen.append(close_windows(AGENT, state, 40_000 * (i + 1), i, WINDOWS, config))
            state = decode_state(encode_state(state))  # as a restart would read it
        seen.append(encode_state(state))
        return seen

    assert run() == run()
