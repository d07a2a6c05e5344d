"""The arithmetic of the trust score, bit-for-bit as the reference engine computes it.

The reference sums with plain left-to-right float addition. ``sum()`` is not used for floats on
purpose: from Python 3.12 it compensates rounding error, which would move some totals by one point.
"""

from __future__ import annotations

from collections.abc import Sequence

from streams.scoring.model import MAX_SCORE, NEUTRAL_DIMENSION_SCORE, RECENT_SIGNALS_PER_DIMENSION


def _recency_weights() -> tuple[tuple[float, ...], tuple[float, ...]]:
    weights = tuple(1.0 + (i / 100) for i in range(RECENT_SIGNALS_PER_DIMENSION))
    sums: list[float] = [0.0]
    running = 0.0
    for weight in weights:
        running += weight
        sums.append(running)
    return weights, tuple(sums)


#: RECENCY_WEIGHTS[i] weighs the i-th oldest kept signal; WEIGHT_SUMS[n] is the sum of the first n,
#: accumulated in the same order as the reference so the division sees the same float.
RECENCY_WEIGHTS, WEIGHT_SUMS = _recency_weights()


def dimension_score(values: Sequence[float]) -> float:
    """Recency-weighted mean of the last <= 100 values, oldest first, on a 0..100 scale."""
    n = len(values)
    if n == 0:
        return NEUTRAL_DIMENSION_SCORE
    if n > RECENT_SIGNALS_PER_DIMENSION:
        values = values[n - RECENT_SIGNALS_PER_DIMENSION :]
        n = RECENT_SIGNALS_PER_DIMENSION
    total = 0.0
    for value, weight in zip(values, RECENCY_WEIGHTS, strict=False):
        total += value * weight
    return (total / WEIGHT_SUMS[n]) * 100


def total_score(dimension_scores: Sequence[float], weights: Sequence[float]) -> int:
    """Weighted sum of the dimension scores, scaled to 0..1000, truncated and clamped."""
    total = 0.0
    for score, weight in zip(dimension_scores, weights, strict=True):
        total += score * weight
    return max(0, min(MAX_SCORE, int(total * 10)))


def contribution_points(dimension_score_value: float, weight: float) -> float:
    """A dimension's share of the 0..1000 total (the reference mixes scales here; this does not)."""
    return dimension_score_value * weight * 10


def trend(scores: Sequence[int]) -> str:
    """Mean of the last five of the last ten scores against the mean of those before them."""
    recent = list(scores[-10:])
    if len(recent) <= 5:
        return "stable"
    newer = recent[-5:]
    older = recent[:-5]
    avg_newer = sum(newer) / len(newer)
    avg_older = sum(older) / len(older)
    if avg_newer > avg_older + 50:
        return "improving"
    if avg_newer < avg_older - 50:
        return "degrading"
    return "stable"


def resource_efficiency(
    tokens_used: int, tokens_budget: int, compute_ms: int, compute_budget_ms: int
) -> float:
    """Signal value for resource use: 1.0 within budget, falling as usage exceeds it."""
    token_efficiency = min(1.0, tokens_budget / max(1, tokens_used))
    compute_efficiency = min(1.0, compute_budget_ms / max(1, compute_ms))
    return (token_efficiency + compute_efficiency) / 2
