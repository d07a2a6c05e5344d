"""The latency benchmark runs end to end on a short run, and measures what it says it measures.

These tests judge correctness, not speed: every probe got exactly its own revocation, every
(agent, window) with signals got one score update, each was measured once, and the result file
has the shape the report reads. What arrived on the topics is read back here, independently of
the benchmark's own bookkeeping.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from tests.benchmarks import latency
from tests.benchmarks.latency import BenchmarkFailure, cdf_points, probe_scores, read_max_rate
from tests.benchmarks.results import Result
from tests.support.signals import signal_topic

LEVELS = latency.LOAD_PERCENTS
PER_LEVEL_KEYS = (
    "background_rate",
    "revocation_probes",
    "revocation_samples",
    "revocation_p50_ms",
    "revocation_p99_ms",
    "revocation_max_ms",
    "probe_handover_p99_ms",
    "backlog_drain_s",
    "worker_cpu_pct",
    "machine_cpu_pct",
)
EXPECTED_FIGURES = {
    "max_rate_signals_per_s",
    *(f"{key}_{pct}pct" for key in PER_LEVEL_KEYS for pct in LEVELS),
    "window_pairs_sent",
    "window_lag_samples",
    "window_lag_p50_ms",
    "window_lag_p99_ms",
    "window_lag_max_ms",
}
CDF_SERIES = {*(f"revocation latency, {pct}% load" for pct in LEVELS), "window emission lag"}
PHASE_SERIES = {
    f"worst revocation latency by moment in the window, {pct}% load": pct for pct in LEVELS
}


async def read_whole_topic(bootstrap: str, topic: str) -> list[tuple[bytes, dict[str, Any]]]:
    """Every record of ``topic`` up to its current end: nothing more can be on it after this."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(latency.PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning()
        ends = await consumer.end_offsets(partitions)
        records: list[tuple[bytes, dict[str, Any]]] = []
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            batches = await consumer.getmany(timeout_ms=1000)
            for messages in batches.values():
                records.extend((m.key, orjson.loads(m.value)) for m in messages)
        return records
    finally:
        await consumer.stop()


def iso_ms(text: str) -> int:
    return round(datetime.fromisoformat(text).timestamp() * 1000)


# -- the parts that need no broker ---------------------------------------------------------


def test_a_primed_probe_is_revoked_by_its_critical_signal_alone() -> None:
    before, after = probe_scores()
    assert after < latency.REVOCATION_THRESHOLD <= before


def test_max_rate_prefers_the_10k_agents_figure(tmp_path: Path) -> None:
    result = Result("throughput", "Sustained throughput")
    result.add("worker_signals_per_s_1k_agents", "one worker, 1k agents", 7000.0, "signals/s")
    result.add("worker_signals_per_s_10k_agents", "one worker, 10k agents", 5000.0, "signals/s")
    result.write(tmp_path)
    assert read_max_rate(tmp_path / "throughput.json") == (
        5000.0,
        "worker_signals_per_s_10k_agents",
    )


def test_max_rate_falls_back_to_any_worker_rate_figure(tmp_path: Path) -> None:
    result = Result("throughput", "Sustained throughput")
    result.add("pure_scoring_signals_per_s", "pure scoring", 90000.0, "signals/s")
    result.add("worker_signals_per_s", "one worker", 4200.0, "signals/s")
    result.write(tmp_path)
    assert read_max_rate(tmp_path / "throughput.json") == (4200.0, "worker_signals_per_s")


def test_max_rate_without_a_throughput_result_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(BenchmarkFailure, match="--max-rate"):
        read_max_rate(tmp_path / "throughput.json")


def test_worst_latency_by_window_phase_takes_the_largest_per_bin() -> None:
    points = latency.worst_by_phase([0.1, 0.4, 5.2, 5.3, 29.9], [10.0, 30.0, 900.0, 700.0, 20.0])
    assert points == [(0.0, 30.0), (5.0, 900.0), (29.5, 20.0)]


def test_cdf_is_downsampled_but_keeps_both_ends() -> None:
    values = [float(v) for v in range(1000, 0, -1)]
    points = cdf_points(values, limit=200)
    assert len(points) <= 200
    assert points[0] == (1.0, 0.001)
    assert points[-1] == (1000.0, 1.0)
    assert [x for x, _ in points] == sorted(x for x, _ in points)
    assert [y for _, y in points] == sorted(y for _, y in points)
    assert cdf_points([3.0, 1.0, 2.0]) == [(1.0, 0.33333), (2.0, 0.66667), (3.0, 1.0)]


# -- the benchmark against the broker and real workers -------------------------------------


async def test_latency_benchmark_measures_every_probe_and_every_window(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    # main() runs its own event loop, so it runs in a thread of its own here.
    status = await asyncio.to_thread(
        latency.main, ["--quick", "--out-dir", str(tmp_path), "--max-rate", "2000"]
    )
    assert status == 0
    result = json.loads((tmp_path / "latency.json").read_text())
    assert result["scenario"] == "latency"
    figures = {f["key"]: f for f in result["figures"]}
    assert set(figures) == EXPECTED_FIGURES
    value = {key: f["value"] for key, f in figures.items()}
    params = result["parameters"]

    # Revocation latency: one sample per probe, each probe revoked once, by its own signal.
    per_level = params["probes_per_level"]
    assert per_level > 0
    for pct in LEVELS:
        assert value[f"revocation_probes_{pct}pct"] == per_level
        assert value[f"revocation_samples_{pct}pct"] == per_level
        p50, p99, top = (value[f"revocation_{q}_ms_{pct}pct"] for q in ("p50", "p99", "max"))
        assert 0 < p50 <= p99 <= top
        asked = 2000 * pct / 100
        assert 0 < value[f"background_rate_{pct}pct"] <= asked * 1.1
        # The worker worked while the load ran, and no process uses more than the machine has.
        assert 0 < value[f"worker_cpu_pct_{pct}pct"] <= 100 * (os.cpu_count() or 1)
        assert 0 < value[f"machine_cpu_pct_{pct}pct"] <= 100
    assert figures[f"revocation_p99_ms_{latency.TARGET_LOAD_PERCENT}pct"]["target"] == {
        "op": "<=",
        "value": latency.REVOCATION_P99_TARGET_MS,
    }
    revocations = await read_whole_topic(kafka_bootstrap, params["revocation_topic"])
    expected_probes = {
        f"{params['probe_did_prefix']}{pct}-{i:05d}" for pct in LEVELS for i in range(per_level)
    }
    counted = Counter(event["agent_did"] for _, event in revocations)
    assert set(counted) == expected_probes
    assert set(counted.values()) == {1}
    probe_topic = signal_topic(params["revocation_topic_prefix"], "security_posture")
    for key, event in revocations:
        assert key == event["agent_did"].encode()
        assert event["type"] == "revoked"
        assert (event["trigger"]["kind"], event["trigger"]["topic"]) == ("signal", probe_topic)
        assert event["total_score"] == params["probe_total_score"]

    # Window lag: one sample per (agent, window) with signals, never before end + grace.
    pairs = params["window_agents"] * params["windows"]
    assert params["windows"] >= 2
    assert value["window_pairs_sent"] == pairs
    assert value["window_lag_samples"] == pairs
    assert 0 <= value["window_lag_p50_ms"] <= value["window_lag_p99_ms"]
    assert value["window_lag_p99_ms"] <= value["window_lag_max_ms"]
    updates = await read_whole_topic(kafka_bootstrap, params["scores_topic"])
    ours = [u for _, u in updates if u["agent_did"].startswith(params["window_did_prefix"])]
    windows_per_agent: dict[str, set[int]] = {}
    for update in ours:
        windows_per_agent.setdefault(update["agent_did"], set()).add(iso_ms(update["window_start"]))
    assert len(ours) == pairs
    assert len(windows_per_agent) == params["window_agents"]
    size_ms = round(params["window_seconds"] * 1000)
    for starts in windows_per_agent.values():
        first = min(starts)
        assert starts == {first + i * size_ms for i in range(params["windows"])}

    # The series a report plots.
    assert set(result["series"]) == CDF_SERIES | set(PHASE_SERIES)
    for name in CDF_SERIES:
        series = result["series"][name]
        points = series["points"]
        assert series["kind"] == "cdf", name
        assert 0 < len(points) <= latency.MAX_SERIES_POINTS, name
        assert [x for x, _ in points] == sorted(x for x, _ in points), name
        assert [y for _, y in points] == sorted(y for _, y in points), name
        assert points[-1][1] == 1.0, name
    for name, pct in PHASE_SERIES.items():
        points = result["series"][name]["points"]
        assert all(0 <= x < params["window_seconds"] for x, _ in points)
        # Series values are rounded to the microsecond.
        worst = value[f"revocation_max_ms_{pct}pct"]
        assert max(y for _, y in points) == pytest.approx(worst, abs=0.001)
