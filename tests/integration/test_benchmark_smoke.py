"""The throughput benchmark runs end to end on a small input, and its figures are consistent."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from tests.benchmarks import throughput
from tests.oracle import DIMENSIONS, OracleAgent


def test_pure_scoring_measure_scores_like_the_oracle() -> None:
    signals = throughput.make_signals(agents=50, count=2_000)
    rate, scores = throughput.pure_rate(signals)
    sent: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for did, dimension, value in signals:
        sent[did].append((DIMENSIONS[dimension], value))
    assert rate > 0
    assert scores == {did: OracleAgent.replay(s).total_score for did, s in sent.items()}


def test_throughput_benchmark_runs_against_the_broker_and_a_worker(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    out = tmp_path / "throughput.json"
    assert throughput.main(["--signals", "3000", "--agents", "300", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["signals"] == 3000
    for key in ("pure_scoring", "raw_aiokafka_consume", "worker"):
        assert result[f"{key}_signals_per_s"] > 0
    assert (
        abs(
            result["worker_vs_raw_consume"]
            - result["worker_signals_per_s"] / result["raw_aiokafka_consume_signals_per_s"]
        )
        < 0.01
    )
