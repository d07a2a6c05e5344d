"""A scripted fleet of agents, and the checks that hold its score updates to the oracle.

Behaviours are chosen so that what the service must publish does not depend on how the worker
interleaves its five signal topics (Kafka orders records per partition, not across topics):
well-behaved and degrading agents never send a critical value (< 0.3), so they are only ever
recalculated at a window close, over everything sent; malicious agents send only zeros, so every
partial order of their signals can only lower the score, and whether they are revoked by a window's
close is decided by the close.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from tests.oracle import DIMENSIONS, OracleAgent, tier

from .signals import Fleet


def agent_did(run: str, i: int) -> str:
    return f"did:mesh:{run}-agent-{i:06d}"


def behaviour_of(i: int) -> str:
    return ("good", "good", "good", "degrading", "malicious")[i % 5]


def window_signals(
    rng: random.Random, behaviour: str, window_index: int, count: int
) -> list[tuple[str, float]]:
    signals = []
    for _ in range(count):
        dimension = rng.choice(DIMENSIONS)
        if behaviour == "good":
            value = rng.choice((1.0, 1.0, 0.9, rng.uniform(0.6, 1.0)))
        elif behaviour == "degrading":
            high = max(0.35, 0.9 - 0.25 * window_index)
            value = rng.uniform(0.3, high)
        else:
            dimension = rng.choice(("security_posture", "policy_compliance", "output_quality"))
            value = 0.0
        signals.append((dimension, value))
    return signals


@dataclass
class Expectation:
    """What the update of one (agent, window) must say, predicted by the oracle."""

    total_score: int
    previous_score: int
    dimension_scores: dict[str, float]
    lifetime_counts: dict[str, int]
    window_counts: dict[str, int]
    revoked: bool
    at_risk: bool
    tier: str


@dataclass
class FleetScript:
    """Signals per window for every agent, with the oracle's prediction for each window close."""

    fleet: Fleet
    oracles: dict[str, OracleAgent] = field(default_factory=dict)
    published: dict[str, int] = field(default_factory=dict)
    expected: dict[tuple[str, int], Expectation] = field(default_factory=dict)

    def send_window(
        self, window_start_ms: int, per_agent: dict[str, list[tuple[str, float]]], **kwargs: object
    ) -> list[tuple[str, bytes, bytes]]:
        """Records for one window; the oracle then closes the window for every agent that sent."""
        records = []
        for did, signals in per_agent.items():
            oracle = self.oracles.setdefault(did, OracleAgent())
            for dimension, value in signals:
                records.append(
                    self.fleet.record(did, dimension, value, timestamp_ms=window_start_ms + 100)
                )
                oracle.record(dimension, value)
            if not signals:
                continue
            previous = self.published.get(did, 500)
            total = oracle.recalculate()
            self.published[did] = total
            counts = Counter(d for d, _ in signals)
            self.expected[(did, window_start_ms)] = Expectation(
                total_score=total,
                previous_score=previous,
                dimension_scores=oracle.dimension_scores(),
                lifetime_counts=dict(oracle.lifetime_counts),
                window_counts={d: counts.get(d, 0) for d in DIMENSIONS},
                revoked=oracle.revoked,
                at_risk=oracle.at_risk,
                tier=tier(total),
            )
        return records


def assert_update_matches(update: dict, expected: Expectation) -> None:  # type: ignore[type-arg]
    where = f"{update['agent_did']} window {update['window_start']}"
    assert update["total_score"] == expected.total_score, where
    assert update["previous_score"] == expected.previous_score, where
    assert update["score_change"] == expected.total_score - expected.previous_score, where
    assert update["revoked"] is expected.revoked, where
    assert update["at_risk"] is expected.at_risk, where
    assert update["tier"] == expected.tier, where
    assert update["late_signals"] == 0, where
    assert update["signals_in_window"] == sum(expected.window_counts.values()), where
    for d in DIMENSIONS:
        got = update["dimensions"][d]
        assert got["score"] == expected.dimension_scores[d], f"{where} {d}"
        assert got["signal_count"] == expected.lifetime_counts[d], f"{where} {d}"
        assert got["window_signal_count"] == expected.window_counts[d], f"{where} {d}"
