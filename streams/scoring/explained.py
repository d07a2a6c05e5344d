"""The entries of an agent's recent signals (``AgentState.recent_signals``), kept for explanations.

Each is the JSON of [dimension, value, source, timestamp ms], as bytes rather than a tuple: a
tuple per signal, living until its agent's tenth signal after it, made up 95% of what the
garbage collector's young generation held, and doubled the time of its collections (see
:mod:`streams.gcpacing`); bytes are not tracked by the collector. The state codec writes the
entries as they are, so the stored format is what it was with tuples.
"""

from __future__ import annotations

import orjson


def explained_entry(dimension: int, value: float, source: str, timestamp_ms: int) -> bytes:
    """One entry, as applying a signal records it: a copy of what orjson writes, which sits in
    a buffer of at least 4 KiB."""
    return bytes(memoryview(orjson.dumps((dimension, value, source, timestamp_ms))))


def explained(recent_signals: list[bytes]) -> list[tuple[int, float, str, int]]:
    """The entries read back, oldest first: (dimension, value, source, timestamp ms)."""
    return [tuple(orjson.loads(entry)) for entry in recent_signals]
