"""Sustained throughput of one worker, side by side with its two ceilings, in one run.

    python -m tests.benchmarks.throughput [--signals N] [--agents N] [--out FILE]

Produces N signals for A agents to fresh topics, then measures, on the same records:
1. the pure scoring module applying them in memory (our logic's own ceiling);
2. a raw aiokafka consumer reading them (the Python client's ceiling);
3. one real worker (subprocess) applying them with state, changelog and window emission, from
   its first applied signal to its last, read from its /metrics endpoint.
Prints the figures and the ratios, and writes them as JSON. Needs a broker:
KAFKA_BOOTSTRAP_SERVERS, or the local one (started when not running).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

from streams.scoring.agent import AgentState, SignalTrigger, apply_signal, close_windows
from streams.scoring.model import DIMENSIONS, ScoringConfig
from streams.scoring.windows import WindowPolicy
from streams.settings import Settings
from streams.topicadmin import ensure_topics
from tests.support.broker import provide_broker
from tests.support.kafka_io import produce
from tests.support.signals import signal_value
from tests.support.worker import WorkerProcess, worker_env

WINDOW = WindowPolicy(size_ms=30_000, grace_ms=5_000)


def make_signals(agents: int, count: int, seed: int = 1) -> list[tuple[str, int, float]]:
    rng = random.Random(seed)
    dids = [f"did:mesh:bench-{i:07d}" for i in range(agents)]
    return [
        (rng.choice(dids), rng.randrange(len(DIMENSIONS)), rng.choice((1.0, 0.9, 0.7, 0.5, 0.2)))
        for _ in range(count)
    ]


def pure_rate(signals: list[tuple[str, int, float]]) -> tuple[float, dict[str, int]]:
    """Signals per second through apply_signal (plus one window close per agent), in memory."""
    config = ScoringConfig.validated((0.25, 0.15, 0.20, 0.25, 0.15))
    states: dict[str, AgentState] = {}
    now = int(time.time() * 1000)
    started = time.perf_counter()
    for offset, (did, dimension, value) in enumerate(signals):
        state = states.get(did)
        if state is None:
            state = states[did] = AgentState()
        apply_signal(
            did, state, SignalTrigger(dimension, 0, offset), value, now, now, 0, WINDOW, config
        )
    for did, state in states.items():
        close_windows(did, state, now + 60_000, 0, WINDOW, config)
    elapsed = time.perf_counter() - started
    return len(signals) / elapsed, {did: s.score for did, s in states.items()}


async def raw_consume_rate(bootstrap: str, topics: list[str], expected: int) -> float:
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        seen = 0
        started = None
        while seen < expected:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            if started is None and batches:
                started = time.perf_counter()
            seen += sum(len(records) for records in batches.values())
        assert started is not None
        return expected / (time.perf_counter() - started)
    finally:
        await consumer.stop()


def _metric(port: str, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def worker_rate(bootstrap: str, prefix: str, expected: int, workdir: Path) -> dict[str, float]:
    env = worker_env(
        bootstrap, prefix, workdir / "state", partitions=6, window_seconds="30", grace_seconds="5"
    )
    worker = WorkerProcess(env=env, log_path=workdir / "worker.log").start()
    port = env["TRUST_WEB_PORT"]
    try:
        deadline = time.monotonic() + 600
        first = None
        applied = 0.0
        while applied < expected:
            assert time.monotonic() < deadline, "the worker did not finish within 600 s"
            try:
                applied = _metric(port, "trust_signals_applied_total")
            except OSError:
                applied = 0.0
            if first is None and applied > 0:
                first = (time.perf_counter(), applied)
            time.sleep(0.05)
        assert first is not None
        elapsed = time.perf_counter() - first[0]
        return {"signals_per_s": (expected - first[1]) / elapsed, "seconds": elapsed}
    finally:
        worker.terminate()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    signals = make_signals(args.agents, args.signals)
    pure, _ = pure_rate(signals)
    with provide_broker() as bootstrap:
        prefix = f"bench-{int(time.time())}."
        settings = Settings(kafka_bootstrap_servers=bootstrap, topic_prefix=prefix, partitions=6)
        await ensure_topics(settings)
        topics = [f"{prefix}signals.{d.value}" for d in DIMENSIONS]
        await produce(
            bootstrap,
            ((topics[d], did.encode(), signal_value(did, v)) for did, d, v in signals),
        )
        raw = await raw_consume_rate(bootstrap, topics, len(signals))
        with tempfile.TemporaryDirectory() as tmp:
            worker = await asyncio.to_thread(
                worker_rate, bootstrap, prefix, len(signals), Path(tmp)
            )
    return {
        "scenario": "sustained throughput",
        "signals": len(signals),
        "agents": args.agents,
        "pure_scoring_signals_per_s": round(pure),
        "raw_aiokafka_consume_signals_per_s": round(raw),
        "worker_signals_per_s": round(worker["signals_per_s"]),
        "worker_vs_raw_consume": round(worker["signals_per_s"] / raw, 3),
        "worker_vs_pure_scoring": round(worker["signals_per_s"] / pure, 3),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--signals", type=int, default=500_000)
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--out", default="docs/benchmarks/throughput.json")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    for key, value in result.items():
        print(f"{key:36} {value}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
