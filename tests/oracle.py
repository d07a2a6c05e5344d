"""The test oracle: an independent reference implementation of the scoring contract.

Written straight from the scoring contract and the reference ``RewardEngine`` it reimplements (the
"seed" below), and deliberately NOT from ``streams/``: nothing here
imports from ``streams``, so when the service and this module agree, two independent readings of the
contract agree. Unit tests compare the pure scoring code against it; integration tests use it to
predict what the running service must publish.

It mirrors the seed's arithmetic literally (same operations, same order), because the contract
requires agreement with the seed to the integer:

* dimension score: ``total += value * weight`` with ``weight = 1.0 + (i / 100)`` over the last
  <= 100 signals of that dimension, oldest first, then ``(total / weight_sum) * 100``; neutral 50;
* total: ``int(10 * s)`` where ``s`` is a plain left-to-right sum over the five dimensions in the
  fixed order, clamped to 0..1000. The builtin ``sum()`` is not used on floats: from Python 3.12 it
  compensates rounding error, which the seed (run on 3.11) did not.

Where the contract fixes the seed, the oracle follows the contract: each dimension keeps its own
last 100 signals (fix 1), weights are validated before use (fix 2), an operator can reinstate a
revoked agent (fix 8). From the README's "Operating it": optional per-dimension revocation floors,
and a reinstated agent's accepted level (its total and each dimension's score when reinstated).

Typical use::

    total, scores = score_signals([("policy_compliance", 0.0)])   # -> 375, {...: 0.0, ...}

    agent = OracleAgent()
    agent.record("security_posture", 0.1, at=now_ms)   # critical: recalculated at once
    agent.recalculate(at=window_close_ms)             # what a window close reports
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence

DIMENSIONS: tuple[str, ...] = (
    "policy_compliance",
    "resource_efficiency",
    "output_quality",
    "security_posture",
    "collaboration_health",
)
DEFAULT_WEIGHTS: dict[str, float] = {
    "policy_compliance": 0.25,
    "resource_efficiency": 0.15,
    "output_quality": 0.20,
    "security_posture": 0.25,
    "collaboration_health": 0.15,
}
NEW_AGENT_SCORE = 500
NEUTRAL_SCORE = 50.0  # the seed writes the int 50; 50 == 50.0 and 50 * w == 50.0 * w exactly
SIGNALS_PER_DIMENSION = 100
HISTORY_LENGTH = 100
CRITICAL_BELOW = 0.3
REVOCATION_THRESHOLD = 300
WARNING_THRESHOLD = 500

Weights = Mapping[str, float] | Sequence[float]
#: {dimension: (floor, minimum signal count)}
Floors = Mapping[str, tuple[float, int]]


def as_weight_dict(weights: Weights | None) -> dict[str, float]:
    """Weights as {dimension: weight}; a sequence is read in the fixed dimension order."""
    if weights is None:
        return dict(DEFAULT_WEIGHTS)
    if isinstance(weights, Mapping):
        return {d: weights[d] for d in DIMENSIONS}
    if len(weights) != len(DIMENSIONS):
        raise ValueError(f"expected {len(DIMENSIONS)} weights, got {len(weights)}")
    return dict(zip(DIMENSIONS, weights, strict=True))


def weights_valid(weights: Weights) -> bool:
    """Contract fix 2: each weight in [0, 1] and the sum within 0.001 of 1.0 (seed: ``< 0.001``)."""
    w = as_weight_dict(weights)
    if not all(0.0 <= w[d] <= 1.0 for d in DIMENSIONS):
        return False
    total = 0.0
    for d in DIMENSIONS:
        total += w[d]
    return abs(total - 1.0) < 0.001


def dimension_score(values: Iterable[float]) -> float:
    """The seed's recency-weighted mean of the last 100 values, oldest first, on 0..100."""
    signals = list(values)
    if not signals:
        return NEUTRAL_SCORE
    total = 0
    weight_sum = 0
    for i, value in enumerate(signals[-SIGNALS_PER_DIMENSION:]):
        weight = 1.0 + (i / 100)
        total += value * weight
        weight_sum += weight
    return (total / weight_sum) * 100 if weight_sum > 0 else NEUTRAL_SCORE


def total_score(
    dimension_scores: Mapping[str, float] | Sequence[float], weights: Weights | None = None
) -> int:
    """int(10 * left-to-right sum of score * weight in the fixed order), clamped to 0..1000."""
    w = as_weight_dict(weights)
    scores = (
        dimension_scores
        if isinstance(dimension_scores, Mapping)
        else dict(zip(DIMENSIONS, dimension_scores, strict=True))
    )
    total = 0
    for d in DIMENSIONS:
        total += scores[d] * w[d]
    total = int(total * 10)
    return max(0, min(1000, total))


def trend(scores: Sequence[int]) -> str:
    """The seed's trend over the last 10 history scores (5 or fewer: stable)."""
    if len(scores) < 2:
        return "stable"
    recent = list(scores[-10:])
    avg_recent = sum(recent[-5:]) / len(recent[-5:])  # ints: sum() is exact
    avg_older = sum(recent[:-5]) / len(recent[:-5]) if len(recent) > 5 else avg_recent
    if avg_recent > avg_older + 50:
        return "improving"
    if avg_recent < avg_older - 50:
        return "degrading"
    return "stable"


def resource_efficiency(
    tokens_used: int, tokens_budget: int, compute_ms: int, compute_budget_ms: int
) -> float:
    """The seed's resource-efficiency signal value."""
    token_efficiency = min(1.0, tokens_budget / max(1, tokens_used))
    compute_efficiency = min(1.0, compute_budget_ms / max(1, compute_ms))
    return (token_efficiency + compute_efficiency) / 2


def tier(total: int) -> str:
    if total >= 900:
        return "verified_partner"
    if total >= 700:
        return "trusted"
    if total >= 500:
        return "standard"
    if total >= 300:
        return "probationary"
    return "untrusted"


class OracleAgent:
    """One agent's scoring state, as the contract describes it.

    ``record`` appends a signal to its dimension's last-100 buffer and recalculates at once when
    the signal is critical (value < 0.3). ``recalculate`` is what every window close does, with
    the window's scores as of its end. Times (``at``) order the history.
    """

    def __init__(
        self,
        weights: Weights | None = None,
        revocation_threshold: int = REVOCATION_THRESHOLD,
        warning_threshold: int = WARNING_THRESHOLD,
        floors: Floors | None = None,
    ) -> None:
        self.weights = as_weight_dict(weights)
        if not weights_valid(self.weights):
            raise ValueError(f"invalid weights {self.weights}")
        self.revocation_threshold = revocation_threshold
        self.warning_threshold = warning_threshold
        self.signals: dict[str, deque[float]] = {
            d: deque(maxlen=SIGNALS_PER_DIMENSION) for d in DIMENSIONS
        }
        self.lifetime_counts: dict[str, int] = {d: 0 for d in DIMENSIONS}
        self.total_score = NEW_AGENT_SCORE
        self.history: list[tuple[int, int]] = []
        self.revoked = False
        self.revocation_count = 0
        self.revocation_reason: str | None = None
        #: Every revocation as (time, total, reason), oldest first.
        self.revocations: list[tuple[int, int, str]] = []
        self.floors: dict[str, tuple[float, int]] = dict(floors or {})
        #: What the operator accepted when reinstating: the total (until the score is back at the
        #: threshold) and each dimension's score (until that dimension is back at its floor).
        self.accepted_total: int | None = None
        self.accepted_scores: dict[str, float] = {}

    def record(self, dimension: str, value: float, at: int = 0) -> bool:
        """Add a signal; returns True when it was critical and so recalculated the score."""
        if dimension not in self.signals:
            raise ValueError(f"unknown dimension {dimension!r}")
        self.signals[dimension].append(value)
        self.lifetime_counts[dimension] += 1
        if value < CRITICAL_BELOW:
            self.recalculate(at)
            return True
        return False

    def dimension_scores(self) -> dict[str, float]:
        return {d: dimension_score(self.signals[d]) for d in DIMENSIONS}

    def recalculate(self, at: int = 0, scores: dict[str, float] | None = None) -> int:
        """Score the agent at time ``at``: over its signals now, or over ``scores`` (a window's
        dimension scores as of its end). The history is kept in time order (an entry for an
        earlier time than the last goes before it), and the agent's score is the latest's."""
        scores = self.dimension_scores() if scores is None else scores
        total = total_score(scores, self.weights)
        position = len(self.history)
        while position and self.history[position - 1][0] > at:
            position -= 1
        self.history.insert(position, (at, total))
        if len(self.history) > HISTORY_LENGTH:
            self.history = self.history[-HISTORY_LENGTH:]
        self.total_score = self.history[-1][1]
        if self.revoked:
            return total
        reason = self._revocation_reason(total, scores)
        if reason is not None:
            self.revoked = True
            self.revocation_count += 1
            self.revocation_reason = reason
            self.revocations.append((at, total, reason))
            self.accepted_total, self.accepted_scores = None, {}
        return total

    def _revocation_reason(self, total: int, scores: dict[str, float]) -> str | None:
        """README: revoked "when a recalculation falls below the threshold and below the score it
        had when reinstated, or below the threshold after having recovered above it"; a floor
        likewise per dimension, against that dimension's score when reinstated."""
        if self.accepted_total is not None and total >= self.revocation_threshold:
            self.accepted_total = None  # recovered
        bar = self.revocation_threshold
        if self.accepted_total is not None:
            bar = min(bar, self.accepted_total)
        if total < bar:
            return f"Trust score {total} below threshold"
        for d in DIMENSIONS:
            if d not in self.floors:
                continue
            floor, min_signals = self.floors[d]
            if d in self.accepted_scores and scores[d] >= floor:
                del self.accepted_scores[d]  # recovered
            bar_d = min(floor, self.accepted_scores.get(d, floor))
            if self.lifetime_counts[d] >= min_signals and scores[d] < bar_d:
                return (
                    f"{d} score {scores[d]:.1f} below its floor {floor:g} "
                    f"(after {self.lifetime_counts[d]} signals)"
                )
        return None

    def history_scores(self) -> list[int]:
        return [score for _, score in self.history]

    def trend(self) -> str:
        return trend(self.history_scores())

    @property
    def at_risk(self) -> bool:
        return not self.revoked and self.total_score < self.warning_threshold

    @property
    def tier(self) -> str:
        return tier(self.total_score)

    def reinstate(self) -> bool:
        """Contract fix 8: lift a revocation; False (and nothing changes) when not revoked. The
        operator accepts the agent's current level: its score and each dimension's score."""
        if not self.revoked:
            return False
        self.revoked = False
        self.accepted_total = self.total_score
        self.accepted_scores = self.dimension_scores()
        return True

    @classmethod
    def replay(
        cls, signals: Iterable[tuple[str, float]], weights: Weights | None = None, **kwargs: int
    ) -> OracleAgent:
        """An agent fed ``signals`` in arrival order, then recalculated once (a window close)."""
        agent = cls(weights, **kwargs)
        for dimension, value in signals:
            agent.record(dimension, value)
        agent.recalculate()
        return agent


def score_signals(
    signals: Iterable[tuple[str, float]], weights: Weights | None = None
) -> tuple[int, dict[str, float]]:
    """Final (total, dimension scores) after ``signals`` (dimension, value) in arrival order.

    This is what the service's next score update for the agent must report.
    """
    agent = OracleAgent.replay(signals, weights)
    return agent.total_score, agent.dimension_scores()
