"""The state and scale-out benchmarks run end to end on quick runs, and measure what they say.

These tests judge correctness, not speed: the restored worker holds every agent with the scores
it had, the byte counts are what their definitions give (the changelog is read back here,
independently of the benchmark's own reading), and two workers together apply every signal
exactly once.
"""

from __future__ import annotations

import asyncio
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from streams.scoring.agent import AgentState
from streams.scoring.codec import encode_state
from streams.state.store import RESERVED_PREFIX
from tests.benchmarks import scaleout, state
from tests.benchmarks.state import Progress, Timeline
from tests.support.worker import WorkerProcess

STATE_FIGURES = {
    "produce_signals_per_s",
    "load_s",
    "close_all_windows_s",
    "rocksdb_bytes_per_agent",
    "rocksdb_all_files_bytes_per_agent",
    "live_state_bytes_per_agent",
    "changelog_bytes_per_signal",
    "changelog_bytes",
    "changelog_records",
    "changelog_records_per_signal",
    "worker_rss_mib",
    "worker_peak_rss_mib",
    "worker_applied_rss_mib",
    "restore_ready_s",
    "restore_agents_per_s",
    "restore_serving_s",
    "restore_serving_agents_per_s",
    "agents_restored",
    "restore_changelog_read_s",
    "restore_changelog_records_per_s",
    "restore_schedule_rebuild_s",
    "restore_work_s",
    "restore_processes",
    "restore_work_agents_per_s",
    "restore_rss_mib",
    "restore_peak_rss_mib",
    "restart_ready_s",
    "restart_processing_s",
}
STATE_TARGETS = {
    "rocksdb_bytes_per_agent": {"op": "<=", "value": 2048},
    "worker_rss_mib": {"op": "<=", "value": 1024},
    "restore_work_agents_per_s": {"op": ">=", "value": 250_000},
}
#: On the local broker the stored (compressed) bytes are measured and carry the target;
#: elsewhere the uncompressed bytes do.
STORED_BYTES = "changelog_stored_bytes_per_signal"


# -- the parts that need no broker ---------------------------------------------------------


def test_partitions_are_kafkas_default_partitioner() -> None:
    partitions = list(range(6))
    for i in range(200):
        key = f"did:mesh:agent-{i}".encode()
        assert state.partition_for(key, 6) == DefaultPartitioner()(key, partitions, partitions)


def test_timeline_reads_milestones_and_the_last_rebuild_of_each_partition() -> None:
    log = "\n".join(
        [
            "[2026-01-01 10:00:00,500] INFO streams: Starting worker with settings {}",
            "[2026-01-01 10:00:01,000] [1] [INFO] Assigned partitions [0, 1] of 2 ",
            "[2026-01-01 10:00:01,010] INFO streams.state.restore: Restoring partitions [0, 1] "
            "from the changelog: 40 offsets to read",
            "[2026-01-01 10:00:08,010] INFO streams.state.restore: Restored partitions [0, 1] "
            "from the changelog: 40 records in 7.00 s",
            "[2026-01-01 10:00:08,500] [1] [INFO] Partition 0: window schedule rebuilt from "
            "7 stored agents in 0.010 s ",
            "[2026-01-01 10:00:08,600] [1] [INFO] Partition 1: window schedule rebuilt from "
            "5 stored agents in 0.020 s ",
            "[2026-01-01 10:00:09,600] [1] [INFO] Partition 1: window schedule rebuilt from "
            "6 stored agents in 0.030 s ",
        ]
    )
    started = datetime(2026, 1, 1, 10, 0, 0).timestamp()
    timeline = Timeline.parse(log, started)
    assert timeline.milestones["settings_read"] == pytest.approx(0.5)
    assert timeline.span("settings_read", "assigned") == pytest.approx(0.5)
    assert timeline.span("changelog_read_started", "changelog_read_done") == pytest.approx(7.0)
    assert sorted(timeline.rebuilt) == [0, 1]
    assert timeline.rebuilt[0][:2] == (7, 0.010)
    assert timeline.rebuilt[0][2] == pytest.approx(8.5)
    # A partition rebuilt again (after a rebalance) counts with its last rebuild.
    assert timeline.rebuilt[1][:2] == (6, 0.030)
    assert timeline.rebuilt[1][2] == pytest.approx(9.6)
    assert timeline.agents == 13
    assert not timeline.recovery_restarted


def test_a_backlog_applied_between_two_polls_is_timed_over_their_interval() -> None:
    steady = Progress(
        first_at=10.0, first_count=100, done_at=12.0, before_first_at=9.9, counts=[1100]
    )
    assert not steady.between_two_polls
    assert steady.rate(1100) == pytest.approx(500.0)
    burst = Progress(
        first_at=10.0, first_count=300, done_at=10.0, before_first_at=9.5, counts=[100, 200]
    )
    assert burst.between_two_polls
    assert burst.rate(300) == pytest.approx(600.0)


def test_a_stalled_workers_log_is_summarised_with_retry_loops_collapsed(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    log.write_text(
        "[2026-01-01 10:00:01,000] [1] [INFO] Assigned partitions [3, 4, 5] of 6 \n"
        "[2026-01-01 10:00:01,100] [1] [INFO] Progress: signals applied 0 \n"
        + "".join(
            f"[2026-01-01 10:00:0{i},500] [1] [WARNING] Fetching signals failed (x); retrying \n"
            for i in range(2, 5)
        )
    )
    summary = state.ownership_lines(WorkerProcess(env={}, log_path=log))
    assert summary.splitlines() == [
        "[1] [INFO] Assigned partitions [3, 4, 5] of 6",
        "[1] [WARNING] Fetching signals failed (x); retrying  (x3)",
    ]


def test_restore_time_is_summed_over_every_restore_until_the_backlog_was_done() -> None:
    started = datetime(2026, 1, 1, 10, 0, 0).timestamp()
    log = "\n".join(
        [
            "[2026-01-01 10:00:02,000] INFO streams.state.restore: Restoring partitions [0] from "
            "the changelog: 10 offsets to read",
            "[2026-01-01 10:00:05,500] INFO streams.state.restore: Restored partitions [0] from "
            "the changelog: 10 records in 3.50 s",
            "[2026-01-01 10:00:09,000] INFO streams.state.restore: Restoring partitions [1] from "
            "the changelog: 10 offsets to read",
        ]
    )
    assert scaleout.restoring_seconds(log, started, until=4.0) == pytest.approx(2.0)
    assert scaleout.restoring_seconds(log, started, until=8.0) == pytest.approx(3.5)
    # A restore still going on when the backlog was done counts up to that moment.
    assert scaleout.restoring_seconds(log, started, until=10.0) == pytest.approx(4.5)


# -- the benchmarks against the broker and real workers ------------------------------------


async def read_changelog_prefix(
    bootstrap: str, topic: str, ends: dict[int, int]
) -> tuple[int, int, dict[bytes, int]]:
    """Records below ``ends`` (what the benchmark measured): their count, key + value bytes,
    and the key + value bytes of the latest record per agent key."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    records = size = 0
    latest: dict[bytes, int] = {}
    try:
        tps = [TopicPartition(topic, p) for p in ends]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while [tp for tp in tps if await consumer.position(tp) < ends[tp.partition]]:
            batches = await consumer.getmany(timeout_ms=1000)
            for tp, messages in batches.items():
                for m in messages:
                    if m.offset >= ends[tp.partition]:
                        break
                    assert m.key is not None and m.value is not None
                    records += 1
                    size += len(m.key) + len(m.value)
                    if not m.key.startswith(RESERVED_PREFIX):
                        latest[m.key] = len(m.key) + len(m.value)
    finally:
        await consumer.stop()
    return records, size, latest


def figures_of(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["key"]: f for f in result["figures"]}


async def test_state_benchmark_restores_every_agent_and_counts_bytes_by_their_definitions(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    # main() runs its own event loop, so it runs in a thread of its own here.
    status = await asyncio.to_thread(state.main, ["--quick", "--out-dir", str(tmp_path)])
    assert status == 0
    result = json.loads((tmp_path / "state.json").read_text())
    assert result["scenario"] == "state"
    params = result["parameters"]
    figures = figures_of(result)
    value = {key: f["value"] for key, f in figures.items()}
    # A restore in several processes also reports their peak memory.
    side_by_side = {"restore_process_peak_rss_mib"} if len(os.sched_getaffinity(0)) > 1 else set()
    assert set(figures) - {STORED_BYTES} == STATE_FIGURES | side_by_side
    for key, target in STATE_TARGETS.items():
        assert figures[key]["target"] == target, key
    bytes_target = {"op": "<=", "value": 300}
    if STORED_BYTES in figures:
        assert figures[STORED_BYTES]["target"] == bytes_target
        assert figures["changelog_bytes_per_signal"]["target"] is None
        # Compressed log segments: fewer bytes than the records' keys and values.
        assert 0 < figures[STORED_BYTES]["value"] < figures["changelog_bytes_per_signal"]["value"]
    else:
        assert figures["changelog_bytes_per_signal"]["target"] == bytes_target
    agents, signals = params["agents"], params["signals"]
    assert params["quick"] is True
    assert agents == state.QUICK_AGENTS
    assert signals == agents * params["signals_per_agent"]

    # Recovery: every agent back, with the score it had, which is the oracle's.
    assert value["agents_restored"] == agents
    sampled = params["sampled_scores"]
    assert len(sampled) == state.SAMPLED_AGENTS
    for did, scores in sampled.items():
        assert scores["before"] == scores["restored"] == scores["oracle"], did
    assert value["restore_agents_per_s"] == pytest.approx(agents / value["restore_ready_s"])
    assert 0 < value["restore_ready_s"] <= value["restore_serving_s"]
    assert (
        0 < value["restore_changelog_read_s"] < value["restore_work_s"] < value["restore_ready_s"]
    )
    assert value["restore_work_agents_per_s"] == pytest.approx(agents / value["restore_work_s"])
    # The worker restores side by side, one process per core this machine gives it.
    assert value["restore_processes"] == min(len(os.sched_getaffinity(0)), params["partitions"])
    # The restarted worker applied the new signal to the agent as stored.
    assert params["restart_agent_signal_count"] == params["signals_per_agent"] + 1
    assert value["restart_ready_s"] > 0
    assert value["restart_processing_s"] > 0

    # The changelog, read again here up to where the benchmark stopped reading.
    ends = {int(p): end for p, end in params["changelog_end_offsets"].items()}
    records, size, latest = await read_changelog_prefix(
        kafka_bootstrap, params["changelog_topic"], ends
    )
    assert value["changelog_records"] == records
    assert value["changelog_bytes"] == size
    assert value["changelog_bytes_per_signal"] == pytest.approx(size / signals)
    assert value["changelog_records_per_signal"] == pytest.approx(records / signals)
    assert len(latest) == agents
    assert value["live_state_bytes_per_agent"] == pytest.approx(sum(latest.values()) / agents)
    # No record is smaller than a DID and an empty state; every agent was written at least once.
    smallest = params["did_bytes"] + len(encode_state(AgentState()))
    assert value["live_state_bytes_per_agent"] > smallest
    assert records >= agents + params["changelog_clock_records"]
    assert size >= agents * smallest

    # RocksDB and memory.
    assert 0 < value["rocksdb_bytes_per_agent"] <= value["rocksdb_all_files_bytes_per_agent"]
    assert params["rocksdb_databases"] == params["partitions"]
    assert 0 < value["worker_rss_mib"] <= value["worker_peak_rss_mib"]
    assert 0 < value["worker_applied_rss_mib"] <= value["worker_peak_rss_mib"]
    assert 0 < value["restore_rss_mib"] <= value["restore_peak_rss_mib"]
    assert all(value[key] > 0 for key in side_by_side)

    series = result["series"]
    assert series["bytes per agent against the target"]["points"][-1] == ["target", 2048.0]
    phases = dict(series["restore timeline"]["points"])
    assert phases["changelog read and check"] == pytest.approx(value["restore_work_s"], abs=1e-3)
    assert all(seconds >= 0 for name, seconds in phases.items() if name != "then to ready")


async def test_scaleout_benchmark_applies_every_signal_exactly_once_with_two_workers(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    status = await asyncio.to_thread(scaleout.main, ["--quick", "--out-dir", str(tmp_path)])
    assert status == 0
    result = json.loads((tmp_path / "scaleout.json").read_text())
    assert result["scenario"] == "scaleout"
    params = result["parameters"]
    value = {key: f["value"] for key, f in figures_of(result).items()}
    signals = params["signals"]
    assert signals == scaleout.QUICK_SIGNALS

    applied = params["two_workers_applied"]
    assert len(applied) == 2
    assert sum(applied) == signals
    assert value["two_workers_signals_applied"] == signals
    assert value["worker_1_share"] + value["worker_2_share"] == pytest.approx(100.0)
    assert value["worker_1_share"] == pytest.approx(100 * applied[0] / signals)
    # Every partition had an owner when the backlog was done.
    owned = {p for partitions in params["two_workers_partitions"] for p in partitions}
    assert owned == set(range(params["partitions"]))
    assert value["two_workers_restoring_s"] >= 0

    assert value["one_worker_signals_per_s"] > 0
    assert value["two_workers_signals_per_s"] > 0
    assert value["speedup"] == pytest.approx(
        value["two_workers_signals_per_s"] / value["one_worker_signals_per_s"]
    )
    bars = dict(result["series"]["signals per second by worker count"]["points"])
    assert bars["1 worker"] == pytest.approx(value["one_worker_signals_per_s"], abs=0.1)
