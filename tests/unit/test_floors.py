"""Per-dimension revocation floors: off by default, and when set they revoke whatever the total."""

from __future__ import annotations

import pytest

from streams.scoring.agent import AgentState, SignalTrigger, apply_signal, close_windows
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
