"""Sustained throughput of one worker, side by side with its two ceilings, in one run.

    python -m tests.benchmarks.throughput [--signals N] [--agents A,B] [--quick] [--out-dir DIR]

For each agent count (default 10,000 and 1,000,000), produces the signals to fresh topics, then
measures, on the same records:
1. the pure scoring module applying them in memory (our logic's own ceiling);
2. a raw aiokafka consumer reading them (the Python client's ceiling);
3. one real worker (subprocess) applying them with state, changelog and window emission, from its
   first applied signal to its last, read from its /metrics endpoint.
Every agent gets its share of the signals (ceil(N / A) at most), in random order. Prints the
figures and writes ``throughput.json``. Needs a broker: KAFKA_BOOTSTRAP_SERVERS, or the local one
(started when not running).

The functions take the broker's security as ``TRUST_KAFKA_*`` variables (a principal's env file,
as ``deploy/local/kafka start --secure`` writes them; none: plaintext), so that the security
scenario measures the same things over SASL_SSL.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

from streams.console import relax_garbage_collection
from streams.kafka.topicadmin import ensure_topics
from streams.scoring.agent import AgentState, SignalTrigger, apply_signal, close_windows
from streams.scoring.model import DIMENSIONS, ScoringConfig
from streams.scoring.windows import WindowPolicy
from streams.settings import Settings
from tests.benchmarks.results import RESULTS_DIR, Result, Series, Target
from tests.support.broker import provide_broker
from tests.support.kafka_io import producer
from tests.support.signals import signal_value
from tests.support.worker import WorkerProcess, worker_env

WINDOW = WindowPolicy(size_ms=30_000, grace_ms=5_000)
TARGET_SIGNALS_PER_S = 35_000

Signals = list[tuple[str, int, float]]
#: ``TRUST_KAFKA_*`` variables of one principal (empty: plaintext, no principal).
Security = Mapping[str, str]
PLAINTEXT: Security = {}
#: The bootstrap address is the run's own; every other TRUST_KAFKA_ variable says how to connect.
_ADDRESS = "TRUST_KAFKA_BOOTSTRAP_SERVERS"


def security_env(security: Security) -> dict[str, str]:
    """The security variables alone (a principal's file also names the brokers)."""
    return {k: v for k, v in security.items() if k.startswith("TRUST_KAFKA_") and k != _ADDRESS}


def settings_for(bootstrap: str, security: Security = PLAINTEXT, **values: Any) -> Settings:
    """Settings connecting to ``bootstrap`` with ``security``, as the worker would read them."""
    keywords = {k.removeprefix("TRUST_").lower(): v for k, v in security_env(security).items()}
    return Settings(kafka_bootstrap_servers=bootstrap, **keywords, **values)


def client_security(bootstrap: str, security: Security = PLAINTEXT) -> dict[str, Any]:
    """aiokafka options for ``security`` (none for plaintext), built as the service builds them."""
    if not security_env(security):
        return {}
    return settings_for(bootstrap, security).kafka_security.aiokafka_options()


def make_signals(agents: int, count: int, seed: int = 1) -> Signals:
    """``count`` signals spread evenly over ``agents`` agents, in random order."""
    rng = random.Random(seed)
    dids = [f"did:mesh:bench-{i:07d}" for i in range(agents)]
    order = [i % agents for i in range(count)]
    rng.shuffle(order)
    return [
        (dids[i], rng.randrange(len(DIMENSIONS)), rng.choice((1.0, 0.9, 0.7, 0.5, 0.2)))
        for i in order
    ]


def pure_rate(signals: Signals) -> tuple[float, dict[str, int]]:
    """Signals per second through apply_signal (plus one window close per agent), in memory."""
    config = ScoringConfig.validated((0.25, 0.15, 0.20, 0.25, 0.15))
    states: dict[str, AgentState] = {}
    now = int(time.time() * 1000)
    # The worker's garbage-collector settings, so that a million states held here cost what
    # they cost there (with the defaults, the collector walks them all again and again).
    thresholds = gc.get_threshold()
    relax_garbage_collection()
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
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    return len(signals) / elapsed, {did: s.score for did, s in states.items()}


async def raw_consume_rate(
    bootstrap: str, topics: list[str], expected: int, *, security: Security = PLAINTEXT
) -> float:
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **client_security(bootstrap, security),
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


def metric(port: str, name: str) -> float:
    """The sum of a metric's samples on a worker's /metrics page."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


@dataclass(slots=True)
class WorkerRun:
    signals_per_s: float
    seconds: float
    #: (seconds since the first applied signal, signals applied) as sampled.
    progress: list[tuple[float, float]]


def worker_rate(
    bootstrap: str,
    prefix: str,
    expected: int,
    workdir: Path,
    while_running: Callable[[int], subprocess.Popen[bytes]] | None = None,
    *,
    security: Security = PLAINTEXT,
) -> WorkerRun:
    """Start a worker on a backlog of ``expected`` signals and time it from first to last.

    ``while_running`` is started with the worker's pid once it applies its first signal (a
    profiler, say) and waited for after the run. The worker connects with ``security``.
    """
    env = worker_env(
        bootstrap, prefix, workdir / "state", partitions=6, window_seconds="30", grace_seconds="5"
    )
    env.update(security_env(security))
    worker = WorkerProcess(env=env, log_path=workdir / "worker.log").start()
    port = env["TRUST_WEB_PORT"]
    companion = None
    try:
        deadline = time.monotonic() + 900
        first: tuple[float, float] | None = None
        applied = 0.0
        progress: list[tuple[float, float]] = []
        while applied < expected:
            if time.monotonic() > deadline or not worker.running():
                raise AssertionError(
                    f"the worker applied {applied:.0f} of {expected} signals:\n{worker.log[-3000:]}"
                )
            try:
                applied = metric(port, "trust_signals_applied_total")
            except OSError:
                applied = 0.0
            now = time.perf_counter()
            if first is None and applied > 0:
                first = (now, applied)
                if while_running is not None:
                    assert worker.process is not None
                    companion = while_running(worker.process.pid)
            if first is not None:
                progress.append((round(now - first[0], 2), applied))
            time.sleep(0.02)
        assert first is not None
        elapsed = time.perf_counter() - first[0]
        if elapsed <= 0 or applied - first[1] <= 0:
            raise AssertionError("the backlog was applied in one step: too few signals to time")
        return WorkerRun((expected - first[1]) / elapsed, elapsed, progress)
    finally:
        worker.terminate()
        if companion is not None:
            companion.wait(timeout=120)


async def prepare_backlog(
    bootstrap: str, signals: Signals, *, security: Security = PLAINTEXT
) -> tuple[str, list[str]]:
    """Fresh topics holding ``signals``: (topic prefix, signal topics).

    Created and written with ``security``: a principal allowed to create topics (admin).
    """
    prefix = f"bench-{time.time_ns()}."
    await ensure_topics(settings_for(bootstrap, security, topic_prefix=prefix, partitions=6))
    topics = [f"{prefix}signals.{d.value}" for d in DIMENSIONS]
    await _produce(
        bootstrap,
        ((topics[d], did.encode(), signal_value(did, v)) for did, d, v in signals),
        client_security(bootstrap, security),
    )
    return prefix, topics


async def _produce(
    bootstrap: str, records: Iterable[tuple[str, bytes, bytes]], options: dict[str, Any]
) -> None:
    """Send every record and wait for its acknowledgement, in batches (as tests.support does)."""
    async with producer(bootstrap, max_request_size=4 * 1024 * 1024, **options) as p:
        pending = []
        for topic, key, value in records:
            pending.append(await p.send(topic, value=value, key=key))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)


def measure(bootstrap: str, result: Result, signals_count: int, agents: int) -> None:
    signals = make_signals(agents, signals_count)
    pure, _ = pure_rate(signals)
    prefix, topics = asyncio.run(prepare_backlog(bootstrap, signals))
    raw = asyncio.run(raw_consume_rate(bootstrap, topics, len(signals)))
    with tempfile.TemporaryDirectory() as tmp:
        run = worker_rate(bootstrap, prefix, len(signals), Path(tmp))
    del signals
    tag = agent_count_tag(agents)
    over = f"{signals_count:,} signals over {agents:,} agents"
    result.add(
        f"worker_signals_per_s_{tag}_agents",
        f"one worker, durable ({over})",
        round(run.signals_per_s),
        "signals/s",
        Target(">=", TARGET_SIGNALS_PER_S),
    )
    result.add(
        f"raw_consume_signals_per_s_{tag}_agents",
        f"raw aiokafka consume only ({over})",
        round(raw),
        "signals/s",
    )
    result.add(
        f"pure_scoring_signals_per_s_{tag}_agents",
        f"pure scoring module in memory ({over})",
        round(pure),
        "signals/s",
    )
    result.add(
        f"worker_vs_raw_consume_{tag}_agents",
        f"worker / raw consume ({agents:,} agents)",
        round(run.signals_per_s / raw, 3),
        "ratio",
        Target(">=", 0.5),
    )
    result.add(
        f"worker_vs_pure_scoring_{tag}_agents",
        f"worker / pure scoring ({agents:,} agents)",
        round(run.signals_per_s / pure, 3),
        "ratio",
    )
    result.series[f"signals applied over time, {agents:,} agents"] = Series(
        "seconds since the first applied signal",
        "signals applied",
        thin(run.progress, 200),
    )


def agent_count_tag(agents: int) -> str:
    """10000 -> "10k", 1000000 -> "1M", 300 -> "300": the suffix of a run's figure keys."""
    if agents % 1_000_000 == 0:
        return f"{agents // 1_000_000}M"
    if agents % 1_000 == 0:
        return f"{agents // 1_000}k"
    return str(agents)


def thin(points: list[tuple[float, float]], at_most: int) -> list[tuple[float | str, float]]:
    """At most about ``at_most`` of the points, evenly spaced, always with the last."""
    step = max(1, len(points) // at_most)
    kept = points[::step]
    if points and kept[-1] != points[-1]:
        kept.append(points[-1])
    return [(x, y) for x, y in kept]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--signals", type=int, default=None, help="signals per run (500,000)")
    parser.add_argument(
        "--agents", default=None, help="comma-separated agent counts (10000,1000000)"
    )
    parser.add_argument("--quick", action="store_true", help="a small smoke-sized run")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    signals = args.signals or (200_000 if args.quick else 500_000)
    agent_counts = [
        int(a) for a in (args.agents or ("300,3000" if args.quick else "10000,1000000")).split(",")
    ]
    result = Result(
        "throughput",
        "Sustained throughput",
        parameters={
            "signals_per_run": signals,
            "agent_counts": agent_counts,
            "partitions": 6,
            "window_seconds": 30,
            "quick": args.quick,
        },
    )
    with provide_broker() as bootstrap:
        for agents in agent_counts:
            # At least one signal per agent, so that every agent has state.
            measure(bootstrap, result, max(signals, agents), agents)
    result.notes.append(
        "Each run starts one worker on a backlog already in Kafka (six partitions per topic) and "
        "times it from its first applied signal to its last, including RocksDB writes, the "
        "changelog and window emission; the raw consume and pure scoring rates are measured on "
        "the same records in the same run. Broker, worker and benchmark share the machine."
    )
    result.print()
    result.write(args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
