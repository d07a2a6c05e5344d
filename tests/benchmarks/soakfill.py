"""Agents as they are after days of service, written to a run's state changelog before its worker
starts, so that a soak measures a worker whose agents' states are full rather than one whose
states grow all run long (every agent keeps at most 100 values per dimension and 100 history
entries: a state stops growing once it has them).

The worker restores these records as it restores any changelog; they are states its own codec
wrote, with every signal offset unset (-1), so the run's first signals are applied as new ones.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Sequence

from streams.kafka.topics import TopicNames
from streams.scoring.agent import EXPLAINED_SIGNALS, AgentState, ScoreUpdate
from streams.scoring.codec import encode_state
from streams.scoring.explained import explained_entry
from streams.scoring.formulas import total_score
from streams.scoring.model import (
    DEFAULT_WEIGHTS,
    DIMENSIONS,
    HISTORY_LENGTH,
    RECENT_SIGNALS_PER_DIMENSION,
)
from tests.benchmarks.latency import BACKGROUND_VALUES, PARTITIONS, WINDOW_SECONDS
from tests.benchmarks.soakfigures import Population
from tests.benchmarks.state import partition_for, produce_batched

SOURCE = "soak-history"
#: Signals an agent has had in its life, per dimension: more than it keeps.
LIFETIME_SIGNALS = 400


def full_state(rng: random.Random, now_ms: int) -> AgentState:
    """A state with every bounded part at its bound, from the soak's own signal values."""
    state = AgentState()
    state.recent = [
        [rng.choice(BACKGROUND_VALUES) for _ in range(RECENT_SIGNALS_PER_DIMENSION)]
        for _ in DIMENSIONS
    ]
    state.lifetime = [LIFETIME_SIGNALS] * len(DIMENSIONS)
    scores = state.dimension_scores()
    state.score = state.published_score = total_score(scores, DEFAULT_WEIGHTS)
    window_ms = int(WINDOW_SECONDS * 1000)
    state.history = [
        (now_ms - (HISTORY_LENGTH - i) * window_ms, max(0, state.score + rng.randint(-20, 20)))
        for i in range(HISTORY_LENGTH)
    ]
    state.recent_signals = [
        explained_entry(
            i % len(DIMENSIONS), rng.choice(BACKGROUND_VALUES), SOURCE, now_ms - i * 1000
        )
        for i in range(EXPLAINED_SIGNALS)
    ]
    start = now_ms - now_ms % window_ms - 2 * window_ms
    state.last_updates = (
        ScoreUpdate(
            window_start_ms=start,
            window_end_ms=start + window_ms,
            total_score=state.score,
            previous_score=state.score,
            dimension_scores=scores,
            lifetime_counts=tuple(state.lifetime),
            window_counts=(1, 0, 0, 0, 0),
            late_signals=0,
            weights_version=0,
            computed_at_ms=start + window_ms,
            revoked=False,
            at_risk=False,
        ),
    )
    # The worker's TTL counts from here: a filled agent is one seen just now.
    state.last_signal_at_ms = now_ms
    return state


async def fill_states(
    bootstrap: str, topic: str, dids: Sequence[str], partitions: int, seed: int
) -> int:
    """Write a full state for each of ``dids`` to the state changelog ``topic``; returns how
    many (every one acknowledged)."""
    rng = random.Random(seed)
    now_ms = int(time.time() * 1000)

    def records() -> Iterator[tuple[str, int, bytes, bytes]]:
        for did in dids:
            key = did.encode()
            yield topic, partition_for(key, partitions), key, encode_state(full_state(rng, now_ms))

    return await produce_batched(bootstrap, records())


async def fill_resident(
    bootstrap: str, names: TopicNames, population: Population, seed: int
) -> int:
    """Full states for the population's resident agents (the cohorts come new, as new agents
    do): written to the run's state changelog, every one acknowledged; returns how many."""
    dids = [population.did(i) for i in range(population.resident)]
    return await fill_states(bootstrap, names.agent_state, dids, PARTITIONS, seed)
