"""The fixed vocabulary of the scoring model: dimensions, tiers, weights and thresholds."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from streams.errors import TrustServiceError


class Dimension(StrEnum):
    """The five dimensions of trust, in the order the total score sums them."""

    POLICY_COMPLIANCE = "policy_compliance"
    RESOURCE_EFFICIENCY = "resource_efficiency"
    OUTPUT_QUALITY = "output_quality"
    SECURITY_POSTURE = "security_posture"
    COLLABORATION_HEALTH = "collaboration_health"


#: Summation order of the total. Fixed, because float addition is not associative and the total
#: must agree with the reference engine to the integer.
DIMENSIONS: tuple[Dimension, ...] = tuple(Dimension)
DIMENSION_INDEX: dict[str, int] = {d.value: i for i, d in enumerate(DIMENSIONS)}

NEW_AGENT_SCORE = 500
NEUTRAL_DIMENSION_SCORE = 50.0
MAX_SCORE = 1000
#: A signal below this value is critical: the agent is recalculated at once.
CRITICAL_SIGNAL_VALUE = 0.3
#: Signals kept per dimension for the dimension score; also the score-history length.
RECENT_SIGNALS_PER_DIMENSION = 100
HISTORY_LENGTH = 100


class Tier(StrEnum):
    VERIFIED_PARTNER = "verified_partner"
    TRUSTED = "trusted"
    STANDARD = "standard"
    PROBATIONARY = "probationary"
    UNTRUSTED = "untrusted"


_TIER_FLOORS: tuple[tuple[int, Tier], ...] = (
    (900, Tier.VERIFIED_PARTNER),
    (700, Tier.TRUSTED),
    (500, Tier.STANDARD),
    (300, Tier.PROBATIONARY),
)


def tier_for(total_score: int) -> Tier:
    for floor, tier in _TIER_FLOORS:
        if total_score >= floor:
            return tier
    return Tier.UNTRUSTED


class InvalidScoringConfig(TrustServiceError, ValueError):
    """A weights or thresholds update broke a rule; nothing changed. Fix the values, resend."""


WEIGHT_SUM_TOLERANCE = 0.001


@dataclass(frozen=True, slots=True)
class DimensionFloor:
    """Revoke an agent whose score in one dimension falls below ``floor`` (0..100) once it has at
    least ``min_signals`` signals there, whatever its total. Under the default weights an agent
    failing one dimension alone never falls below 375, so without a floor it is never revoked."""

    floor: float
    min_signals: int = 1


NO_FLOORS: tuple[DimensionFloor | None, ...] = (None,) * len(DIMENSIONS)


@dataclass(frozen=True, slots=True)
class ScoringConfig:
    """Weights (in dimension order), thresholds and the version that identifies them.

    Instances are only ever built through :meth:`validated`, so a config in use is always valid:
    an invalid update is rejected whole before anything changes.
    """

    weights: tuple[float, float, float, float, float]
    revocation_threshold: int = 300
    warning_threshold: int = 500
    version: int = 0
    #: Per-dimension revocation floors, in dimension order; None: no floor (the default).
    floors: tuple[DimensionFloor | None, ...] = NO_FLOORS

    @classmethod
    def validated(
        cls,
        weights: tuple[float, ...] | list[float],
        revocation_threshold: int = 300,
        warning_threshold: int = 500,
        version: int = 0,
        floors: tuple[DimensionFloor | None, ...] | list[DimensionFloor | None] = NO_FLOORS,
    ) -> ScoringConfig:
        problems = config_problems(weights, revocation_threshold, warning_threshold)
        problems += floor_problems(floors)
        if problems:
            raise InvalidScoringConfig("; ".join(problems))
        w = tuple(float(x) for x in weights)
        return cls(
            (w[0], w[1], w[2], w[3], w[4]),
            revocation_threshold,
            warning_threshold,
            version,
            tuple(floors),
        )

    def weight_of(self, dimension: Dimension) -> float:
        return self.weights[DIMENSION_INDEX[dimension.value]]


DEFAULT_WEIGHTS: tuple[float, float, float, float, float] = (0.25, 0.15, 0.20, 0.25, 0.15)


def floor_problems(
    floors: tuple[DimensionFloor | None, ...] | list[DimensionFloor | None],
) -> list[str]:
    if len(floors) != len(DIMENSIONS):
        return [f"expected {len(DIMENSIONS)} floor entries, got {len(floors)}"]
    problems = []
    for dimension, floor in zip(DIMENSIONS, floors, strict=True):
        if floor is None:
            continue
        if not math.isfinite(floor.floor) or not 0.0 <= floor.floor <= 100.0:
            problems.append(f"floor of {dimension.value} must be in [0, 100], got {floor.floor}")
        if isinstance(floor.min_signals, bool) or floor.min_signals < 1:
            problems.append(
                f"min_signals of {dimension.value}'s floor must be at least 1, "
                f"got {floor.min_signals}"
            )
    return problems


def config_problems(
    weights: tuple[float, ...] | list[float], revocation_threshold: int, warning_threshold: int
) -> list[str]:
    """Every rule a proposed configuration breaks, as sentences an operator can act on."""
    problems: list[str] = []
    if len(weights) != len(DIMENSIONS):
        problems.append(f"expected {len(DIMENSIONS)} weights, got {len(weights)}")
    else:
        for dimension, weight in zip(DIMENSIONS, weights, strict=True):
            if not isinstance(weight, int | float) or isinstance(weight, bool):
                problems.append(f"weight of {dimension.value} is not a number")
            elif not math.isfinite(weight) or not 0.0 <= weight <= 1.0:
                problems.append(f"weight of {dimension.value} must be in [0, 1], got {weight}")
        if not problems:
            total = 0.0
            for weight in weights:
                total += weight
            if abs(total - 1.0) >= WEIGHT_SUM_TOLERANCE:
                problems.append(
                    f"weights must sum to 1.0 (within {WEIGHT_SUM_TOLERANCE}), "
                    f"they sum to {total:.6f}"
                )
    for name, threshold in (
        ("revocation_threshold", revocation_threshold),
        ("warning_threshold", warning_threshold),
    ):
        if isinstance(threshold, bool) or not isinstance(threshold, int):
            problems.append(f"{name} must be an integer")
        elif not 0 <= threshold <= MAX_SCORE:
            problems.append(f"{name} must be in 0..{MAX_SCORE}, got {threshold}")
    if not problems and revocation_threshold > warning_threshold:
        problems.append(
            f"revocation_threshold ({revocation_threshold}) must not exceed "
            f"warning_threshold ({warning_threshold})"
        )
    return problems
