"""The soak and fresh-DID flood benchmarks run end to end on tiny runs, and write the result shape
the report reads, with a sample per interval.

These tests judge the benchmarks, not the worker: every probe got its own revocation and was
measured once (the revocation topic is read back here), the samples cover the run on its
schedule, and the per-agent figures are what their definitions give.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.benchmarks import flood, soak
from tests.benchmarks.latency import BenchmarkFailure
from tests.benchmarks.soakfigures import Population, Sample, flatness, per_interval
from tests.integration.test_benchmark_latency_smoke import read_whole_topic

SOAK_FIGURES = {
    "soak_rate_signals_per_s",
    "soak_background_signals_per_s",
    "soak_signals_sent",
    "soak_rss_middle_mib",
    "soak_rss_last_mib",
    "soak_rss_growth",
    "soak_rss_max_mib",
    "soak_rss_end_mib",
    "soak_peak_rss_mib",
    "soak_lag_max",
    "soak_lag_mean",
    "soak_close_pending_max",
    "soak_close_pending_last",
    "soak_worker_cpu_share",
    "soak_probes",
    "soak_revocation_samples",
    "soak_probes_reinstated",
    "soak_revocation_p50_ms",
    "soak_revocation_p99_ms",
    "soak_revocation_max_ms",
    "soak_agents_idle_past_ttl",
    "soak_drain_s",
}
#: Present when the worker exposes trust_live_agents and trust_agents_expired.
SOAK_TTL_FIGURES = {"soak_live_agents_max", "soak_live_agents_end", "soak_agents_expired"}
FLOOD_FIGURES = {
    "flood_dids",
    "flood_state_cache_agents",
    "flood_signals_per_s",
    "flood_produce_s",
    "flood_close_s",
    "flood_rss_baseline_mib",
    "flood_rss_applied_mib",
    "flood_rss_closed_mib",
    "flood_peak_rss_mib",
    "flood_rss_bytes_per_agent_applied",
    "flood_rss_bytes_per_agent",
    "flood_rocksdb_bytes_per_agent",
    "flood_rocksdb_all_files_bytes_per_agent",
}
FLOOD_OPTIONAL = {"flood_rss_marginal_bytes_per_agent", "flood_live_agents"}


def values_of(result: dict[str, Any]) -> dict[str, float]:
    return {f["key"]: f["value"] for f in result["figures"]}


# -- the parts that need no broker ---------------------------------------------------------


def test_cohorts_take_turns_while_resident_agents_stay_active() -> None:
    population = Population("r", agents=1_000, cohort_s=600.0, duration_s=1_800.0)
    assert population.cohorts == 3
    assert population.cohort_size == 167
    assert population.resident + 3 * population.cohort_size == 1_000
    rng = random.Random(1)
    for k, elapsed in enumerate((10.0, 700.0, 1_790.0)):
        picked = {population.pick(rng, elapsed) for _ in range(20_000)}
        cohort_start = population.resident + k * population.cohort_size
        cohort = set(range(cohort_start, cohort_start + population.cohort_size))
        # Every resident agent and every agent of the active cohort, and nobody else.
        assert picked == set(range(population.resident)) | cohort
    # The last cohort stays active to the end, even past its nominal time.
    assert population.cohort_at(5_000.0) == 2


def test_agents_idle_past_the_ttl_are_those_of_cohorts_that_ended_long_enough_ago() -> None:
    population = Population("r", agents=1_000, cohort_s=600.0, duration_s=1_800.0)
    # Cohort 0 is idle from 600 s, cohort 1 from 1,200 s, cohort 2 never.
    assert population.idle_past(1_800.0, 600.0) == 167  # cohort 0: idle 1,200 s > 600 s
    assert population.idle_past(1_800.0, 1_200.0) == 0
    assert population.idle_past(1_900.0, 600.0) == 2 * 167
    # An agent whose last window is still open is kept, however long the TTL has passed.
    assert population.idle_past(1_800.0, 10.0, hold_s=35.0) == 2 * 167
    assert population.idle_past(640.0, 10.0, hold_s=35.0) == 167
    assert population.idle_past(630.0, 10.0, hold_s=35.0) == 0


def test_flatness_compares_the_last_third_with_the_middle_third() -> None:
    samples = [
        Sample(float(at), rss, 0.0, None, None)
        for at, rss in ((0, 50.0), (10, 100.0), (20, 110.0), (30, 120.0), (40, 130.0), (60, 200.0))
    ]
    flat = flatness(samples, 60.0)
    assert (flat.middle_mib, flat.last_mib) == (115.0, 165.0)
    assert flat.ratio == pytest.approx(165 / 115)
    with pytest.raises(BenchmarkFailure, match="too few samples"):
        flatness(samples[:2], 60.0)


def test_revocation_latency_per_interval_is_each_intervals_percentile() -> None:
    latencies = [(1.0, 10.0), (9.9, 30.0), (10.0, 5.0), (35.0, 7.0)]
    assert per_interval(latencies, 10.0, 99) == [(0.167, 30.0), (0.333, 5.0), (0.667, 7.0)]
    assert per_interval(latencies, 10.0, 50) == [(0.167, 10.0), (0.333, 5.0), (0.667, 7.0)]


def test_flood_slope_is_least_squares() -> None:
    assert flood.slope([(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)]) == pytest.approx(2.0)
    assert flood.slope([(0.0, 0.0), (1.0, 2.0), (2.0, 1.0), (3.0, 3.0)]) == pytest.approx(0.8)
    assert flood.slope([(1.0, 1.0), (1.0, 2.0)]) is None


# -- the benchmarks against the broker and a real worker ------------------------------------


async def test_soak_samples_every_interval_and_measures_every_probe(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    args = ["--minutes", "0.5", "--agents", "1000", "--rate", "500", "--sample-seconds", "2"]
    args += ["--ttl-minutes", "0.2", "--out-dir", str(tmp_path)]
    # main() runs its own event loop, so it runs in a thread of its own here.
    assert await asyncio.to_thread(soak.main, args) == 0
    result = json.loads((tmp_path / "soak.json").read_text())
    assert result["scenario"] == "soak"
    params = result["parameters"]
    value = values_of(result)
    assert SOAK_FIGURES <= set(value) <= SOAK_FIGURES | SOAK_TTL_FIGURES
    assert 0 < value["soak_worker_cpu_share"] < 4  # cores
    assert value["soak_close_pending_max"] >= value["soak_close_pending_last"] >= 0
    growth = next(f for f in result["figures"] if f["key"] == "soak_rss_growth")
    assert growth["target"] == {"op": "<=", "value": 1.1}
    assert value["soak_rss_growth"] == pytest.approx(
        value["soak_rss_last_mib"] / value["soak_rss_middle_mib"], rel=1e-3
    )
    assert params["agent_ttl_days"] == pytest.approx(0.2 / 1440)
    assert params["cohorts"] == 3
    assert 0 < value["soak_background_signals_per_s"] <= 500 * 1.1

    # A sample every two seconds from the start of the load to its end, on schedule.
    rss = result["series"]["worker RSS over time"]["points"]
    assert len(rss) == 16
    minutes = [x for x, _ in rss]
    assert minutes == sorted(minutes)
    assert minutes[0] == pytest.approx(0, abs=0.02)
    assert minutes[-1] == pytest.approx(0.5, abs=0.02)
    assert all(mib > 0 for _, mib in rss)
    assert max(mib for _, mib in rss) == pytest.approx(value["soak_rss_max_mib"], abs=0.1)
    lag = result["series"]["consumer lag over time"]["points"]
    assert lag and all(records >= 0 for _, records in lag)

    # Every probe revoked once, by its own signal, and measured once.
    assert value["soak_probes"] == value["soak_revocation_samples"] > 0
    assert 0 < value["soak_revocation_p50_ms"] <= value["soak_revocation_p99_ms"]
    assert value["soak_revocation_p99_ms"] <= value["soak_revocation_max_ms"]
    events = await read_whole_topic(kafka_bootstrap, params["revocation_topic"])
    revoked = [event for _, event in events if event["type"] == "revoked"]
    counted = Counter(event["agent_did"] for event in revoked)
    assert len(counted) == value["soak_probes"]
    assert set(counted.values()) == {1}
    assert all(did.startswith(params["probe_did_prefix"]) for did in counted)
    assert {event["total_score"] for event in revoked} == {params["probe_total_score"]}
    # Probes are reinstated once measured (so that the TTL can expire them), each at most once;
    # the last interval's are not, and the benchmark counted the audit records arrived by then.
    reinstated = Counter(event["agent_did"] for _, event in events if event["type"] == "reinstated")
    assert set(reinstated) <= set(counted)
    assert set(reinstated.values()) == {1}
    assert len(reinstated) >= value["soak_probes_reinstated"] >= value["soak_probes"] / 2
    per_interval_p99 = result["series"]["revocation latency over time, p99 per interval"]
    assert 0 < len(per_interval_p99["points"]) <= 16
    # Series values are rounded to the microsecond.
    worst = max(y for _, y in per_interval_p99["points"])
    assert worst <= value["soak_revocation_max_ms"] + 0.001
    if "soak_live_agents_max" in value:
        # Never more live agents than were ever sent a signal.
        assert value["soak_live_agents_max"] <= params["agents"] + value["soak_probes"]


async def test_flood_measures_memory_and_disk_per_never_seen_agent(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    args = ["--quick", "--dids", "5000", "--cache-agents", "500", "--out-dir", str(tmp_path)]
    assert await asyncio.to_thread(flood.main, args) == 0
    result = json.loads((tmp_path / "flood.json").read_text())
    assert result["scenario"] == "flood"
    value = values_of(result)
    assert FLOOD_FIGURES <= set(value) <= FLOOD_FIGURES | FLOOD_OPTIONAL
    assert value["flood_dids"] == 5000
    assert value["flood_state_cache_agents"] == 500
    assert result["parameters"]["signals_produced"] == 5000
    mib = 1024 * 1024
    baseline = value["flood_rss_baseline_mib"]
    assert value["flood_rss_bytes_per_agent"] == pytest.approx(
        (value["flood_rss_closed_mib"] - baseline) * mib / 5000
    )
    assert value["flood_rss_bytes_per_agent_applied"] == pytest.approx(
        (value["flood_rss_applied_mib"] - baseline) * mib / 5000
    )
    assert (
        0
        < value["flood_rocksdb_bytes_per_agent"]
        <= value["flood_rocksdb_all_files_bytes_per_agent"]
    )
    assert value["flood_rss_closed_mib"] <= value["flood_peak_rss_mib"]
    # RSS sampled against agents applied, from the idle worker to the last agent.
    points = result["series"]["worker RSS by agents applied"]["points"]
    assert points[0] == [0.0, baseline]
    assert points[-1][0] == 5000
    assert [x for x, _ in points] == sorted(x for x, _ in points)
