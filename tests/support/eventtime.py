"""One input log of signals, and what it must produce whichever way it is processed.

:func:`make_log` builds a log in time order over several windows (each topic-partition's records
are then in time order too, as one producer per agent writes them), with agents whose signals run
low enough to be revoked by a critical signal. :func:`expected` is an oracle written apart from
``streams``: per agent, it applies the signals in time order (ties: dimension order, then offset),
closes each window before the first of the agent's signals stamped at or after its end plus grace,
and takes each window's score as of its end, over the signals stamped before it. Its formulas are
those of ``tests/oracle.py``.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from aiokafka.partitioner import murmur2

from tests.oracle import CRITICAL_BELOW, DIMENSIONS, OracleAgent, dimension_score, total_score


@dataclass(frozen=True)
class LoggedSignal:
    did: str
    dimension: int
    value: float
    at_ms: int
    #: Offset in its topic-partition: its place among the log's records for that partition.
    offset: int
    partition: int

    def record(self, prefix: str) -> tuple[str, bytes, bytes]:
        stamp = datetime.fromtimestamp(self.at_ms // 1000, UTC).replace(
            microsecond=self.at_ms % 1000 * 1000
        )
        body = {
            "agent_did": self.did,
            "value": self.value,
            "source": "event-time-test",
            "timestamp": stamp.isoformat().replace("+00:00", "Z"),
        }
        return (
            f"{prefix}signals.{DIMENSIONS[self.dimension]}",
            self.did.encode(),
            orjson.dumps(body),
        )


def partition_of(did: str, partitions: int) -> int:
    return (murmur2(did.encode()) & 0x7FFFFFFF) % partitions


def make_log(
    *,
    agents: int,
    signals: int,
    start_ms: int,
    span_ms: int,
    partitions: int,
    seed: int = 7,
) -> list[LoggedSignal]:
    """``signals`` signals for ``agents`` agents, stamped over ``span_ms`` from ``start_ms``, in
    time order. One agent in ten runs low (values 0.05-0.45): its critical signals revoke it."""
    rng = random.Random(seed)
    dids = [f"did:mesh:event-time-{i:05d}" for i in range(agents)]
    low = set(rng.sample(dids, agents // 10))
    stamps = sorted(start_ms + rng.randrange(span_ms) for _ in range(signals))
    offsets: dict[tuple[int, int], int] = defaultdict(int)
    log = []
    for at_ms in stamps:
        did = rng.choice(dids)
        dimension = rng.randrange(len(DIMENSIONS))
        value = round(rng.uniform(0.05, 0.45) if did in low else rng.uniform(0.3, 1.0), 3)
        partition = partition_of(did, partitions)
        offset = offsets[dimension, partition]
        offsets[dimension, partition] += 1
        log.append(LoggedSignal(did, dimension, value, at_ms, offset, partition))
    return log


@dataclass(frozen=True)
class Expected:
    #: (agent, window start ms) -> total score at the window's end.
    updates: dict[tuple[str, int], int]
    #: (agent, cause) -> total score it was revoked at; the cause is ("signal", dimension,
    #: offset) of a critical signal or ("window", start ms) of a window's close.
    revocations: dict[tuple[str, tuple[object, ...]], int]


def expected(log: list[LoggedSignal], window_ms: int, grace_ms: int) -> Expected:
    by_agent: dict[str, list[LoggedSignal]] = defaultdict(list)
    for signal in log:
        by_agent[signal.did].append(signal)
    result = Expected({}, {})
    for did, signals in by_agent.items():
        _AgentInTime(did, window_ms, grace_ms, result).run(signals)
    return result


class _AgentInTime:
    """One agent's signals applied in time order, its windows closed at end plus grace."""

    def __init__(self, did: str, window_ms: int, grace_ms: int, result: Expected) -> None:
        self.did = did
        self.window_ms = window_ms
        self.grace_ms = grace_ms
        self.result = result
        self.agent = OracleAgent()
        self.open_windows: list[int] = []
        self.applied: list[LoggedSignal] = []

    def run(self, signals: list[LoggedSignal]) -> None:
        for signal in sorted(signals, key=lambda s: (s.at_ms, s.dimension, s.offset)):
            self.close(signal.at_ms)
            start = signal.at_ms - signal.at_ms % self.window_ms
            if not self.open_windows or self.open_windows[-1] != start:
                self.open_windows.append(start)
            self.applied.append(signal)
            revoked = self.agent.revoked
            self.agent.record(DIMENSIONS[signal.dimension], signal.value, at=signal.at_ms)
            if signal.value < CRITICAL_BELOW and self.agent.revoked and not revoked:
                cause = ("signal", signal.dimension, signal.offset)
                self.result.revocations[self.did, cause] = self.agent.revocations[-1][1]
        self.close(None)

    def close(self, before_ms: int | None) -> None:
        """Close every window that ends, plus grace, at or before ``before_ms`` (None: all)."""
        while self.open_windows and (
            before_ms is None or before_ms >= self.open_windows[0] + self.window_ms + self.grace_ms
        ):
            start = self.open_windows.pop(0)
            end = start + self.window_ms
            scores = {
                name: dimension_score(
                    [s.value for s in self.applied if s.dimension == d and s.at_ms < end][-100:]
                )
                for d, name in enumerate(DIMENSIONS)
            }
            revoked = self.agent.revoked
            total = self.agent.recalculate(at=end, scores=scores)
            assert total == total_score(scores, self.agent.weights)
            self.result.updates[self.did, start] = total
            if self.agent.revoked and not revoked:
                self.result.revocations[self.did, ("window", start)] = total
