"""The throughput and profile benchmarks run end to end on a small input, and their figures are
consistent (correct, not fast: speed is what the benchmarks themselves report)."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from tests.benchmarks import profile, throughput
from tests.oracle import DIMENSIONS, OracleAgent


def test_signals_are_spread_evenly_over_every_agent() -> None:
    signals = throughput.make_signals(agents=70, count=1_000)
    per_agent = Counter(did for did, _, _ in signals)
    assert len(per_agent) == 70
    assert set(per_agent.values()) <= {14, 15}


def test_pure_scoring_measure_scores_like_the_oracle() -> None:
    signals = throughput.make_signals(agents=50, count=2_000)
    rate, scores = throughput.pure_rate(signals)
    sent: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for did, dimension, value in signals:
        sent[did].append((DIMENSIONS[dimension], value))
    assert rate > 0
    assert scores == {did: OracleAgent.replay(s).total_score for did, s in sent.items()}


def test_throughput_benchmark_runs_against_the_broker_and_a_worker(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    assert throughput.main(["--quick", "--agents", "300", "--out-dir", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "throughput.json").read_text())
    figures = {f["key"]: f for f in result["figures"]}
    worker = figures["worker_signals_per_s_300_agents"]
    raw = figures["raw_consume_signals_per_s_300_agents"]
    assert worker["value"] > 0 and raw["value"] > 0
    assert figures["pure_scoring_signals_per_s_300_agents"]["value"] > 0
    ratio = figures["worker_vs_raw_consume_300_agents"]
    assert ratio["value"] == pytest.approx(worker["value"] / raw["value"], abs=0.002)
    assert worker["met"] == (worker["value"] >= 35_000)
    (progress,) = result["series"].values()
    applied = [y for _, y in progress["points"]]
    assert applied == sorted(applied) and applied[-1] == 200_000


def test_profile_summary_attributes_every_sample() -> None:
    collapsed = "\n".join(
        [
            "process 1:python;thread (0x1);run (asyncio/events.py:80);"
            "encode_state (streams/scoring/codec.py:139) 7",
            "process 1:python;thread (0x1);run (asyncio/events.py:80);"
            "apply_signal (streams/scoring/agent.py:280) 3",
            "process 1:python;thread (0x1);select (selectors.py:468) 2",
        ]
    )
    components, functions, total = profile.summarise(collapsed)
    assert total == 12
    assert components == {"state codec (encode/decode)": 7, "scoring model": 3, "other": 2}
    assert functions["encode_state (streams/scoring/codec.py:139)"] == 7
