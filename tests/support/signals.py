"""Building signal records and checking the worker's outputs against the oracle."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

from tests.oracle import DIMENSIONS as ORACLE_DIMENSIONS
from tests.oracle import OracleAgent

DIMENSIONS = tuple(ORACLE_DIMENSIONS)


def signal_topic(prefix: str, dimension: str) -> str:
    return f"{prefix}signals.{dimension}"


def signal_value(
    did: str,
    value: float,
    *,
    source: str = "test-suite",
    dimension: str | None = None,
    timestamp_ms: int | None = None,
    signal_id: str | None = None,
) -> bytes:
    body: dict[str, object] = {"agent_did": did, "value": value, "source": source}
    if dimension is not None:
        body["dimension"] = dimension
    if timestamp_ms is not None:
        body["timestamp"] = datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC).isoformat()
    if signal_id is not None:
        body["signal_id"] = signal_id
    return orjson.dumps(body)


@dataclass
class Fleet:
    """What the test sent, per agent, in the order each agent's dimension topics received it."""

    prefix: str
    sent: dict[str, list[tuple[str, float]]] = field(default_factory=lambda: defaultdict(list))

    def record(
        self, did: str, dimension: str, value: float, **kwargs: object
    ) -> tuple[str, bytes, bytes]:
        self.sent[did].append((dimension, value))
        return (
            signal_topic(self.prefix, dimension),
            did.encode(),
            signal_value(did, value, **kwargs),  # type: ignore[arg-type]
        )

    def oracle(self, did: str) -> OracleAgent:
        agent = OracleAgent()
        for dimension, value in self.sent[did]:
            agent.record(dimension, value)
        return agent

    def signal_count(self, did: str) -> int:
        return len(self.sent[did])


def iso_ms(text: str) -> int:
    """ISO 8601 (with Z or an offset) to epoch ms."""
    return round(datetime.fromisoformat(text).timestamp() * 1000)


def lifetime_signals(update: dict) -> int:  # type: ignore[type-arg]
    return sum(d["signal_count"] for d in update["dimensions"].values())


def latest_update_per_agent(updates: list[dict]) -> dict[str, dict]:  # type: ignore[type-arg]
    latest: dict[str, dict] = {}  # type: ignore[type-arg]
    for update in updates:
        did = update["agent_did"]
        if did not in latest or iso_ms(update["window_start"]) >= iso_ms(
            latest[did]["window_start"]
        ):
            latest[did] = update
    return latest


def dedupe_updates(updates: list[dict]) -> dict[tuple[str, str], dict]:  # type: ignore[type-arg]
    """Updates by (agent, window); a repeat must be identical to the first, or this fails."""
    seen: dict[tuple[str, str], dict] = {}  # type: ignore[type-arg]
    for update in updates:
        key = (update["agent_did"], update["window_start"])
        if key in seen:
            assert seen[key] == update, f"repeated update differs:\n{seen[key]}\n{update}"
        else:
            seen[key] = update
    return seen
