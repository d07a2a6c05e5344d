"""Revocation latency under load, and how late window score updates are published.

    python -m tests.benchmarks.latency [--quick] [--out-dir DIR] [--max-rate N] [--duration S]
                                       [--loads 10,50]

Two measurements, each against one real worker (a subprocess configured by environment, as it is
deployed) on fresh topics of a real broker (KAFKA_BOOTSTRAP_SERVERS, else the local one):

1. Revocation latency. A paced background of ordinary signals runs at 10 % and then at 50 % of
   the worker's sustained rate (the throughput benchmark's figure in <out-dir>/throughput.json,
   or --max-rate). Meanwhile, every PROBE_INTERVAL_S, one critical signal is sent for a probe
   agent, which that signal takes below the revocation threshold. Latency is measured from just
   before the signal is produced until its revocation arrives in a consumer in this process (one
   clock for both ends).
2. Window emission lag. Light load on a worker with the real windows (30 s, 5 s grace): every
   agent sends in two consecutive windows, and for every score update, lag = its arrival here
   minus (window_end + grace), the earliest moment the contract allows it to exist.

Every probe must get its revocation and every (agent, window) its update; anything missing or
unexpected fails the run. Writes <out-dir>/latency.json (see tests/benchmarks/results.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import re
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import murmur2

from streams.kafka.topicadmin import ensure_topics
from streams.kafka.topics import TopicNames
from streams.scoring.formulas import dimension_score, total_score
from streams.scoring.model import (
    CRITICAL_SIGNAL_VALUE,
    DEFAULT_WEIGHTS,
    DIMENSIONS,
    NEUTRAL_DIMENSION_SCORE,
    Dimension,
)
from streams.settings import Settings
from tests.benchmarks.handover import HandoverWatch
from tests.benchmarks.results import RESULTS_DIR, Result, Series, Target, load, percentile
from tests.benchmarks.state import cpu_seconds, pid_of
from tests.support.broker import provide_broker
from tests.support.kafka_io import producer as make_producer
from tests.support.kafka_io import unique_name
from tests.support.worker import WorkerProcess, worker_env

SCENARIO = "latency"
TITLE = "Revocation latency and window emission lag"

PARTITIONS = 6
LOAD_PERCENTS = (10, 50)
#: The revocation latency target applies at this load.
TARGET_LOAD_PERCENT = 50
REVOCATION_P99_TARGET_MS = 50.0
WINDOW_LAG_P99_TARGET_MS = 1000.0

#: The real configuration, taken from the settings' defaults and passed to the workers explicitly
#: so that TRUST_* variables in this process's environment cannot change what is measured.
_DEFAULTS = Settings.model_fields
WINDOW_SECONDS = float(_DEFAULTS["window_seconds"].default)
GRACE_SECONDS = float(_DEFAULTS["grace_seconds"].default)
TICK_INTERVAL_SECONDS = float(_DEFAULTS["tick_interval_seconds"].default)
REVOCATION_THRESHOLD = int(_DEFAULTS["revocation_threshold"].default)
BATCH_WITHIN_SECONDS = float(_DEFAULTS["batch_within_seconds"].default)
STATE_FLUSH_SECONDS = float(_DEFAULTS["state_flush_seconds"].default)

PROBE_INTERVAL_S = 0.075
#: Probes are revoked by their critical signal on this dimension (one of the two weighted 0.25).
PROBE_DIMENSION = DIMENSIONS.index(Dimension.SECURITY_POSTURE)
#: The lowest value that is not critical: it lowers a dimension without causing a recalculation.
PRIMING_VALUE = CRITICAL_SIGNAL_VALUE
CRITICAL_VALUE = 0.0
#: Background values are never critical, and keep every dimension score at 50 or above, so the
#: background never revokes anyone and the revocation topic carries the probes' events only.
BACKGROUND_VALUES = (1.0, 0.9, 0.7, 0.5)
SOURCE = "latency-benchmark"

#: How often the background producer wakes to send what its schedule says is due.
PACE_S = 0.01
MAX_SERIES_POINTS = 200
REVOCATION_WAIT_S = 30.0
DRAIN_WAIT_S = 300.0
#: Light load of the window measurement: each window's signals go out over this many seconds.
WINDOW_SPREAD_S = {"full": 10.0, "quick": 2.0}


class BenchmarkFailure(RuntimeError):
    """The run could not measure what it promises (a probe without revocation, a lost update)."""


# -- helpers -----------------------------------------------------------------------------------


def read_max_rate(path: Path) -> tuple[float, str]:
    """The worker's sustained rate from the throughput benchmark's result, and the figure's key."""
    if not path.exists():
        raise BenchmarkFailure(
            f"{path} not found: run python -m tests.benchmarks.throughput first, "
            "or give the maximum rate with --max-rate"
        )
    data = load(path)
    figures: dict[str, float] = {f["key"]: float(f["value"]) for f in data.get("figures", [])}
    if not figures:
        # A result written before benchmarks shared one shape: flat keys.
        figures = {k: float(v) for k, v in data.items() if isinstance(v, int | float)}
    preferred = "worker_signals_per_s_10k_agents"
    if preferred in figures:
        return figures[preferred], preferred
    for key in sorted(figures):
        if key.startswith("worker_signals_per_s"):
            return figures[key], key
    raise BenchmarkFailure(f"{path} has no worker_signals_per_s figure; pass --max-rate")


def cdf_points(
    values: Sequence[float], limit: int = MAX_SERIES_POINTS
) -> list[tuple[float | str, float]]:
    """(value, fraction of samples <= value), downsampled to at most ``limit`` points; the
    smallest and the largest sample are always kept, so the plot shows the whole range."""
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return []
    if n <= limit:
        indexes = list(range(n))
    else:
        indexes = sorted({round(i * (n - 1) / (limit - 1)) for i in range(limit)})
    return [(round(ordered[i], 3), round((i + 1) / n, 5)) for i in indexes]


def worst_by_phase(
    phases_s: Sequence[float], values: Sequence[float], bin_s: float = 0.5
) -> list[tuple[float | str, float]]:
    """The largest value per ``bin_s`` of the window in which it was measured: windows close
    for every agent at once (end + grace), and this shows what that moment costs."""
    worst: dict[float, float] = {}
    for phase, value in zip(phases_s, values, strict=True):
        start = round(phase - phase % bin_s, 3)
        worst[start] = max(value, worst.get(start, value))
    return [(start, round(worst[start], 3)) for start in sorted(worst)]


def probe_scores() -> tuple[int, int]:
    """A primed probe's total before and after its critical signal, by the scoring module."""
    primed = [dimension_score([PRIMING_VALUE])] * len(DIMENSIONS)
    primed[PROBE_DIMENSION] = NEUTRAL_DIMENSION_SCORE
    revoked = list(primed)
    revoked[PROBE_DIMENSION] = dimension_score([CRITICAL_VALUE])
    return total_score(primed, DEFAULT_WEIGHTS), total_score(revoked, DEFAULT_WEIGHTS)


def signal_bytes(did: str, value: float, timestamp_ms: int | None = None) -> bytes:
    body: dict[str, Any] = {"agent_did": did, "value": value, "source": SOURCE}
    if timestamp_ms is not None:
        body["timestamp"] = datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC).isoformat()
    return orjson.dumps(body)


def iso_ms(text: str) -> int:
    return round(datetime.fromisoformat(text).timestamp() * 1000)


def signals_applied(port: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(
        float(v) for v in re.findall(r"^trust_signals_applied_total(?:{[^}]*})? (\S+)$", text, re.M)
    )


async def wait_until_applied(worker: WorkerProcess, count: int, timeout: float, what: str) -> float:
    """Wait until the worker has applied ``count`` signals in all; seconds waited."""
    port = worker.env["TRUST_WEB_PORT"]
    started = time.monotonic()
    applied = 0.0
    while True:
        with contextlib.suppress(OSError):
            applied = await asyncio.to_thread(signals_applied, port)
        if applied >= count:
            return time.monotonic() - started
        if not worker.running():
            raise BenchmarkFailure(f"the worker exited while {what}:\n{worker.log[-3000:]}")
        if time.monotonic() - started > timeout:
            raise BenchmarkFailure(
                f"the worker applied {applied:.0f} of {count} signals within {timeout:.0f} s "
                f"while {what}"
            )
        await asyncio.sleep(0.1)


class Arrivals:
    """Every record of one topic, stamped with ``clock()`` the moment this process receives it."""

    def __init__(self, bootstrap: str, topic: str, clock: Callable[[], float]) -> None:
        self.topic = topic
        self.clock = clock
        #: (arrival time, key, value) in arrival order.
        self.records: list[tuple[float, bytes, bytes]] = []
        #: Arrival of the first record per key.
        self.first: dict[bytes, float] = {}
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        self._consumer.assign([TopicPartition(self.topic, p) for p in range(PARTITIONS)])
        await self._consumer.seek_to_beginning()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        consumer, clock, records, first = self._consumer, self.clock, self.records, self.first
        while True:
            batches = await consumer.getmany(timeout_ms=200)
            arrived = clock()
            for messages in batches.values():
                for m in messages:
                    records.append((arrived, m.key, m.value))
                    first.setdefault(m.key, arrived)

    async def wait_for(self, keys: set[bytes], timeout: float) -> set[bytes]:
        """Wait until every key has arrived; the keys still missing at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            missing = {k for k in keys if k not in self.first}
            if not missing or time.monotonic() > deadline:
                return missing
            if self._task is not None and self._task.done():
                self._task.result()  # the consumer failed: raise its error
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()


@contextlib.asynccontextmanager
async def running_worker(
    bootstrap: str,
    prefix: str,
    workdir: Path,
    name: str,
    prepare: Callable[[TopicNames], Awaitable[object]] | None = None,
    **extra: str,
) -> AsyncIterator[WorkerProcess]:
    """One worker with the real configuration, plus ``extra`` settings (TRUST_* by their
    lower-case names), ready before it is yielded and stopped after. ``prepare`` runs once the
    topics exist and before the worker starts."""
    settings = Settings(
        kafka_bootstrap_servers=bootstrap, topic_prefix=prefix, partitions=PARTITIONS
    )
    await ensure_topics(settings)
    if prepare is not None:
        await prepare(TopicNames(prefix))
    env = worker_env(
        bootstrap,
        prefix,
        workdir / f"state-{name}",
        partitions=PARTITIONS,
        window_seconds=f"{WINDOW_SECONDS:g}",
        grace_seconds=f"{GRACE_SECONDS:g}",
        tick_interval_seconds=f"{TICK_INTERVAL_SECONDS:g}",
        revocation_threshold=str(REVOCATION_THRESHOLD),
        **extra,
    )
    worker = WorkerProcess(env=env, log_path=workdir / f"{name}.log").start()
    try:
        await asyncio.to_thread(worker.wait_until_ready, 120.0)
        yield worker
    finally:
        try:
            await asyncio.to_thread(worker.terminate, 60.0)
        finally:
            worker.ensure_stopped()


# -- revocation latency ------------------------------------------------------------------------


@dataclass
class Background:
    sent: int = 0
    acked: int = 0
    failed: list[BaseException] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


async def paced_background(
    producer: AIOKafkaProducer,
    topics: Sequence[str],
    dids: Sequence[str],
    rate: float,
    duration: float,
    rng: random.Random,
) -> Background:
    """Send ``rate`` ordinary signals a second for ``duration`` seconds, catching up each wake-up
    on whatever the schedule says is due (so a late wake-up costs a burst, not a lower rate).

    Signals go out as record batches built per topic-partition (Kafka's default partitioner,
    as any producer's): a send() per signal costs tens of microseconds of Python, and a load
    generator that needs a core of its own would starve the worker it is measuring.
    """
    result = Background()
    total = round(rate * duration)
    keys = [did.encode() for did in dids]
    partitions = {topic: len(await producer.partitions_for(topic)) for topic in topics}
    key_partition = [int(murmur2(key) & 0x7FFFFFFF) for key in keys]
    n = len(dids)
    started = time.perf_counter()
    while result.sent < total:
        due = min(total, int((time.perf_counter() - started) * rate) + 1)
        builders: dict[tuple[str, int], Any] = {}
        while result.sent < due:
            i = rng.randrange(n)
            topic = topics[rng.randrange(len(topics))]
            tp = (topic, key_partition[i] % partitions[topic])
            builder = builders.get(tp)
            if builder is None:
                builder = builders[tp] = producer.create_batch()
            value = signal_bytes(dids[i], rng.choice(BACKGROUND_VALUES))
            if builder.append(key=keys[i], value=value, timestamp=None) is None:
                await _send_batch(producer, builder, tp, result)
                builder = builders[tp] = producer.create_batch()
                builder.append(key=keys[i], value=value, timestamp=None)
            result.sent += 1
        for tp, builder in builders.items():
            await _send_batch(producer, builder, tp, result)
        await asyncio.sleep(PACE_S)
    result.seconds = time.perf_counter() - started
    await producer.flush()
    if result.failed:
        raise BenchmarkFailure(
            f"{len(result.failed)} background batches were not acknowledged: {result.failed[0]!r}"
        )
    return result


async def _send_batch(
    producer: AIOKafkaProducer, builder: Any, tp: tuple[str, int], result: Background
) -> None:
    count = builder.record_count()
    future = await producer.send_batch(builder, tp[0], partition=tp[1])

    def done(f: asyncio.Future[Any]) -> None:
        if f.exception() is None:
            result.acked += count
        else:
            result.failed.append(f.exception())  # type: ignore[arg-type]

    future.add_done_callback(done)


def background_in_own_process(
    bootstrap: str,
    topics: Sequence[str],
    dids: Sequence[str],
    rate: float,
    duration: float,
    seed: int,
) -> tuple[int, int, float]:
    """:func:`paced_background` run in a process of its own: sending tens of thousands of
    signals a second keeps a Python event loop busy, and in the measuring process it would delay
    the probes and the stamping of their revocations, and be measured as the worker's latency.
    Returns (sent, acknowledged, seconds)."""

    async def send() -> Background:
        producer = make_producer(bootstrap)
        await producer.start()
        try:
            return await paced_background(
                producer, topics, dids, rate, duration, random.Random(seed)
            )
        finally:
            await producer.stop()

    background = asyncio.run(send())
    return background.sent, background.acked, background.seconds


async def background_elsewhere(
    bootstrap: str,
    topics: Sequence[str],
    dids: Sequence[str],
    rate: float,
    duration: float,
    seed: int,
) -> Background:
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        sent, acked, seconds = await asyncio.get_running_loop().run_in_executor(
            pool, background_in_own_process, bootstrap, topics, dids, rate, duration, seed
        )
    return Background(sent=sent, acked=acked, seconds=seconds)


@dataclass
class Probe:
    did: str
    sent_at: float
    #: Seconds since the start of the window it was sent in, to line latency up with closes.
    window_phase_s: float
    future: asyncio.Future[Any]


async def send_probes(
    producer: AIOKafkaProducer, topic: str, dids: Sequence[str], interval: float
) -> list[Probe]:
    """One critical signal per probe agent, one every ``interval`` seconds on a fixed schedule."""
    probes = []
    started = time.perf_counter()
    for i, did in enumerate(dids):
        delay = started + i * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        value = signal_bytes(did, CRITICAL_VALUE)
        sent_at = time.perf_counter()
        future = await producer.send(topic, value, key=did.encode())
        probes.append(Probe(did, sent_at, time.time() % WINDOW_SECONDS, future))
    return probes


@dataclass
class LevelResult:
    percent: int
    target_rate: float
    background: Background
    latencies_ms: list[float]
    window_phases_s: list[float]
    probes: int
    drain_s: float
    #: CPU while the load was sent: the worker's (share of one core), and the machine's (share
    #: of all its cores: the worker, the broker and the load generator together).
    worker_cpu: float = 0.0
    machine_cpu: float = 0.0
    #: Per probe, ms from its record's timestamp until a plain consumer beside the worker had it
    #: (tests/benchmarks/handover.py): Kafka's and the machine's part of its latency.
    handover_ms: list[float] = field(default_factory=list)


def check_revocation(event: dict[str, Any], probe: Probe, topic: str, expected_total: int) -> None:
    """The revocation must be the one the probe's own critical signal caused."""
    metadata = probe.future.result()
    trigger = event.get("trigger", {})
    problems = []
    if event.get("type") != "revoked" or event.get("agent_did") != probe.did:
        problems.append(f"not a revocation of {probe.did}")
    if (trigger.get("kind"), trigger.get("topic")) != ("signal", topic):
        problems.append(f"trigger {trigger} is not a signal on {topic}")
    elif (trigger.get("partition"), trigger.get("offset")) != (
        metadata.partition,
        metadata.offset,
    ):
        problems.append(
            f"trigger at {trigger.get('partition')}@{trigger.get('offset')}, but the probe's "
            f"signal is at {metadata.partition}@{metadata.offset}"
        )
    if event.get("total_score") != expected_total:
        problems.append(f"total {event.get('total_score')}, expected {expected_total}")
    if problems:
        raise BenchmarkFailure(f"unexpected revocation event {event}: " + "; ".join(problems))


async def run_level(
    *,
    bootstrap: str,
    percent: int,
    rate: float,
    duration: float,
    worker: WorkerProcess,
    revocations: Arrivals,
    probe_producer: AIOKafkaProducer,
    names: TopicNames,
    background_dids: Sequence[str],
    probe_dids: Sequence[str],
    applied_before: int,
    expected_total: int,
    rng: random.Random,
) -> LevelResult:
    probe_topic = names.signals[PROBE_DIMENSION]
    handover = HandoverWatch(
        bootstrap,
        probe_topic,
        PARTITIONS,
        [did.encode() for did in probe_dids],
        duration + REVOCATION_WAIT_S,
    )
    await handover.start()
    worker_cpu_before, machine_before = cpu_seconds(pid_of(worker)), machine_cpu_times()
    started = time.perf_counter()
    background, probes = await asyncio.gather(
        background_elsewhere(
            bootstrap,
            names.signals,
            background_dids,
            rate,
            duration,
            rng.randrange(1 << 30),
        ),
        send_probes(probe_producer, probe_topic, probe_dids, PROBE_INTERVAL_S),
    )
    await probe_producer.flush()
    seconds = time.perf_counter() - started
    worker_cpu = (cpu_seconds(pid_of(worker)) - worker_cpu_before) / seconds
    machine_cpu = busy_share(machine_before, machine_cpu_times())
    missing = await revocations.wait_for({p.did.encode() for p in probes}, REVOCATION_WAIT_S)
    if missing:
        shown = ", ".join(sorted(k.decode() for k in missing)[:5])
        raise BenchmarkFailure(
            f"{len(missing)} of {len(probes)} probes at {percent}% load got no revocation within "
            f"{REVOCATION_WAIT_S:.0f} s of the last probe (e.g. {shown})"
        )
    handover_ms = await handover.result()
    if len(handover_ms) != len(probes):
        raise BenchmarkFailure(
            f"a plain consumer beside the worker read {len(handover_ms)} of {len(probes)} probe "
            f"records at {percent}% load"
        )
    events = {key: orjson.loads(value) for _, key, value in revocations.records}
    latencies = []
    for probe in probes:
        key = probe.did.encode()
        check_revocation(events[key], probe, probe_topic, expected_total)
        latencies.append((revocations.first[key] - probe.sent_at) * 1000)
    # Start the next level on an idle worker: wait until it has applied everything sent so far.
    drain_s = await wait_until_applied(
        worker,
        applied_before + background.sent + len(probes),
        DRAIN_WAIT_S,
        f"draining the {percent}% load",
    )
    phases = [p.window_phase_s for p in probes]
    return LevelResult(
        percent,
        rate,
        background,
        latencies,
        phases,
        len(probes),
        drain_s,
        worker_cpu,
        machine_cpu,
        list(handover_ms.values()),
    )


def machine_cpu_times() -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine so far, in clock ticks (/proc/stat)."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle and iowait
    total = sum(ticks[:8])  # guest time is counted in user time already
    return total - idle, total


def busy_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total > 0 else 0.0


async def revocation_latency(
    bootstrap: str, workdir: Path, run: str, args: argparse.Namespace, max_rate: float
) -> tuple[list[LevelResult], dict[str, Any]]:
    prefix = unique_name("lat-rev") + "."
    names = TopicNames(prefix)
    rng = random.Random(7)
    background_dids = [f"did:mesh:{run}-bg-{i:06d}" for i in range(args.agents)]
    probes_per_level = max(1, int(args.duration / PROBE_INTERVAL_S))
    probe_dids = {
        pct: [f"did:mesh:{run}-probe-{pct}-{i:05d}" for i in range(probes_per_level)]
        for pct in args.loads
    }
    before, after = probe_scores()
    if not after < REVOCATION_THRESHOLD <= before:
        raise BenchmarkFailure(
            f"a primed probe scores {before} and {after} after its critical signal; the probe "
            f"design needs {after} < {REVOCATION_THRESHOLD} <= {before}"
        )
    facts = {
        "revocation_topic_prefix": prefix,
        "revocation_topic": names.revocations,
        "probe_did_prefix": f"did:mesh:{run}-probe-",
        "probes_per_level": probes_per_level,
        "probe_total_score": after,
    }
    async with running_worker(bootstrap, prefix, workdir, "revocation-worker") as worker:
        revocations = Arrivals(bootstrap, names.revocations, time.perf_counter)
        background_producer = make_producer(bootstrap)
        # The probe's own producer sends at once: latency starts before produce, so a linger
        # would only add to it.
        probe_producer = make_producer(bootstrap, linger_ms=0)
        await revocations.start()
        await background_producer.start()
        await probe_producer.start()
        try:
            # Priming: every probe agent gets the lowest non-critical value on the other four
            # dimensions, applied before any probe is sent, so that its critical signal alone
            # takes it below the threshold (one critical signal cannot revoke a fresh agent).
            priming = 0
            for dids in probe_dids.values():
                for did in dids:
                    for d, topic in enumerate(names.signals):
                        if d != PROBE_DIMENSION:
                            await background_producer.send(
                                topic, signal_bytes(did, PRIMING_VALUE), key=did.encode()
                            )
                            priming += 1
            await background_producer.flush()
            await wait_until_applied(worker, priming, 120.0, "applying the priming signals")
            if revocations.records:
                raise BenchmarkFailure("priming alone revoked agents; the probe design is wrong")
            applied = priming
            levels = []
            for pct in args.loads:
                level = await run_level(
                    bootstrap=bootstrap,
                    percent=pct,
                    rate=max_rate * pct / 100,
                    duration=args.duration,
                    worker=worker,
                    revocations=revocations,
                    probe_producer=probe_producer,
                    names=names,
                    background_dids=background_dids,
                    probe_dids=probe_dids[pct],
                    applied_before=applied,
                    expected_total=after,
                    rng=rng,
                )
                applied += level.background.sent + level.probes
                levels.append(level)
            expected = {did.encode() for dids in probe_dids.values() for did in dids}
            others = {key for _, key, _ in revocations.records} - expected
            if others:
                raise BenchmarkFailure(f"revocations of agents that were no probe: {others}")
            repeats = len(revocations.records) - len(expected)
            if repeats:
                raise BenchmarkFailure(f"{repeats} revocations were published more than once")
        finally:
            await probe_producer.stop()
            await background_producer.stop()
            await revocations.stop()
    return levels, facts


# -- window emission lag -----------------------------------------------------------------------


@dataclass
class WindowLag:
    lags_ms: list[float]
    pairs_sent: int
    windows: list[int]


def check_update(
    update: dict[str, Any],
    arrived: float,
    sent: dict[tuple[bytes, int], int],
    updates: set[tuple[bytes, int]],
) -> float:
    """Check one score update against what was sent; its lag in ms after window end + grace."""
    pair = (update["agent_did"].encode(), iso_ms(update["window_start"]))
    if pair not in sent:
        raise BenchmarkFailure(f"an update for a window that had no signals: {update}")
    if pair in updates:
        raise BenchmarkFailure(f"a second update for one (agent, window): {update}")
    updates.add(pair)
    if update["signals_in_window"] != sent[pair] or update["late_signals"] != 0:
        raise BenchmarkFailure(
            f"the update counts {update['signals_in_window']} signals "
            f"({update['late_signals']} late) where {sent[pair]} were sent: {update}"
        )
    return arrived * 1000 - (iso_ms(update["window_end"]) + round(GRACE_SECONDS * 1000))


async def window_lag(
    bootstrap: str, workdir: Path, run: str, agents: int, spread: float
) -> tuple[WindowLag, dict[str, Any]]:
    prefix = unique_name("lat-win") + "."
    names = TopicNames(prefix)
    size_ms = round(WINDOW_SECONDS * 1000)
    grace_ms = round(GRACE_SECONDS * 1000)
    rng = random.Random(11)
    dids = [f"did:mesh:{run}-win-{i:06d}" for i in range(agents)]
    facts: dict[str, Any] = {
        "window_topic_prefix": prefix,
        "scores_topic": names.scores,
        "window_did_prefix": f"did:mesh:{run}-win-",
    }
    async with running_worker(bootstrap, prefix, workdir, "window-worker") as worker:
        scores = Arrivals(bootstrap, names.scores, time.time)
        producer = make_producer(bootstrap)
        await scores.start()
        await producer.start()
        try:
            # One signal through first, so the worker is surely reading signals before the
            # measured ones go out: a signal applied after its window closed would be late.
            warmup = f"did:mesh:{run}-warmup"
            await producer.send_and_wait(
                names.signals[0], signal_bytes(warmup, 1.0), warmup.encode()
            )
            await wait_until_applied(worker, 1, 120.0, "applying a first signal")
            now_ms = time.time_ns() // 1_000_000
            first = now_ms - now_ms % size_ms
            if now_ms + (spread + 2) * 1000 > first + size_ms:
                first += size_ms  # too little of this window is left to send in it
            windows = [first, first + size_ms]
            sent: dict[tuple[bytes, int], int] = {}
            for window in windows:
                delay = window / 1000 + 0.2 - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                started = time.perf_counter()
                for i, did in enumerate(dids):
                    delay = started + spread * i / agents - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    stamp = time.time_ns() // 1_000_000
                    if not window <= stamp < window + size_ms:
                        raise BenchmarkFailure(
                            f"could not send window {window}'s signals within it (at {stamp})"
                        )
                    dimension = rng.randrange(len(DIMENSIONS))
                    await producer.send(
                        names.signals[dimension],
                        signal_bytes(did, rng.choice(BACKGROUND_VALUES), stamp),
                        key=did.encode(),
                    )
                    sent[(did.encode(), window)] = sent.get((did.encode(), window), 0) + 1
                await producer.flush()
            last_close = (windows[-1] + size_ms + grace_ms) / 1000
            ours = f"did:mesh:{run}-win-".encode()
            lags: list[float] = []
            updates: set[tuple[bytes, int]] = set()
            read = 0
            while True:
                # Only records that arrived since the last look are decoded.
                arrived_records = scores.records[read:]
                read += len(arrived_records)
                for arrived, key, value in arrived_records:
                    if key.startswith(ours):
                        lags.append(check_update(orjson.loads(value), arrived, sent, updates))
                if len(updates) == len(sent) or time.time() > last_close + 60.0:
                    break
                await asyncio.sleep(0.2)
            if len(updates) < len(sent):
                raise BenchmarkFailure(
                    f"{len(sent) - len(updates)} of {len(sent)} (agent, window) pairs got no "
                    "score update within 60 s of the last window's close"
                )
        finally:
            await producer.stop()
            await scores.stop()
    return WindowLag(lags, len(sent), windows), facts


# -- the run -----------------------------------------------------------------------------------


def build_result(
    args: argparse.Namespace,
    max_rate: float,
    rate_source: str,
    levels: list[LevelResult],
    lag: WindowLag,
    facts: dict[str, Any],
) -> Result:
    result = Result(SCENARIO, TITLE)
    result.parameters = {
        "quick": args.quick,
        "max_rate_signals_per_s": max_rate,
        "max_rate_source": rate_source,
        "load_percents": list(args.loads),
        "duration_s": args.duration,
        "background_agents": args.agents,
        "probe_interval_ms": PROBE_INTERVAL_S * 1000,
        "window_agents": args.window_agents,
        "windows": len(lag.windows),
        "window_seconds": WINDOW_SECONDS,
        "grace_seconds": GRACE_SECONDS,
        "tick_interval_seconds": TICK_INTERVAL_SECONDS,
        "revocation_threshold": REVOCATION_THRESHOLD,
        "partitions": PARTITIONS,
        "parts_concurrent": args.quick,
        **facts,
    }
    result.add(
        "max_rate_signals_per_s", "maximum load (worker's sustained rate)", max_rate, "signals/s"
    )
    for level in levels:
        pct = level.percent
        values = level.latencies_ms
        target = Target("<=", REVOCATION_P99_TARGET_MS) if pct == TARGET_LOAD_PERCENT else None
        result.add(
            f"background_rate_{pct}pct",
            f"background signals, {pct}% load (asked {level.target_rate:,.0f}/s)",
            level.background.rate,
            "signals/s",
        )
        result.add(
            f"revocation_probes_{pct}pct", f"probes sent, {pct}% load", level.probes, "count"
        )
        result.add(
            f"revocation_samples_{pct}pct",
            f"revocations measured, {pct}% load",
            len(values),
            "count",
        )
        result.add(
            f"revocation_p50_ms_{pct}pct",
            f"revocation latency p50, {pct}% load",
            percentile(values, 50),
            "ms",
        )
        result.add(
            f"revocation_p99_ms_{pct}pct",
            f"revocation latency p99, {pct}% load",
            percentile(values, 99),
            "ms",
            target,
        )
        result.add(
            f"revocation_max_ms_{pct}pct", f"revocation latency max, {pct}% load", max(values), "ms"
        )
        result.add(
            f"probe_handover_p99_ms_{pct}pct",
            f"probe's record there for a plain consumer beside the worker, p99, {pct}% load",
            percentile(level.handover_ms, 99),
            "ms",
        )
        result.add(
            f"backlog_drain_s_{pct}pct",
            f"backlog left when the {pct}% load stopped, drained in",
            level.drain_s,
            "s",
        )
        result.add(
            f"worker_cpu_pct_{pct}pct",
            f"worker CPU while the {pct}% load ran (of one core)",
            level.worker_cpu * 100,
            "%",
        )
        result.add(
            f"machine_cpu_pct_{pct}pct",
            f"machine CPU busy while the {pct}% load ran (both cores: worker, broker, load)",
            level.machine_cpu * 100,
            "%",
        )
        # Series names are the plots' titles in the report.
        result.series[f"revocation latency, {pct}% load"] = Series(
            "revocation latency (ms)", "fraction of probes", cdf_points(values), kind="cdf"
        )
        result.series[f"worst revocation latency by moment in the window, {pct}% load"] = Series(
            f"seconds into the {WINDOW_SECONDS:g} s window when the probe was sent",
            "worst revocation latency (ms)",
            worst_by_phase(level.window_phases_s, values),
            kind="line",
        )
        if level.background.rate < 0.95 * level.target_rate:
            result.notes.append(
                f"At {pct}% load the background reached {level.background.rate:,.0f} signals/s of "
                f"the {level.target_rate:,.0f} asked: the benchmark process could not keep pace."
            )
    result.add("window_pairs_sent", "(agent, window) pairs with signals", lag.pairs_sent, "count")
    result.add("window_lag_samples", "score updates measured", len(lag.lags_ms), "count")
    result.add("window_lag_p50_ms", "window emission lag p50", percentile(lag.lags_ms, 50), "ms")
    result.add(
        "window_lag_p99_ms",
        "window emission lag p99",
        percentile(lag.lags_ms, 99),
        "ms",
        Target("<=", WINDOW_LAG_P99_TARGET_MS),
    )
    result.add("window_lag_max_ms", "window emission lag max", max(lag.lags_ms), "ms")
    result.series["window emission lag"] = Series(
        "lag after window end + grace (ms)",
        "fraction of updates",
        cdf_points(lag.lags_ms),
        kind="cdf",
    )
    result.notes += [
        "Revocation latency: from just before a probe's critical signal is produced until its "
        "revocation arrives in this process's consumer (one clock). Each probe agent was primed "
        f"beforehand with {PRIMING_VALUE:g} (not critical) on the four other dimensions, so its "
        f"critical {CRITICAL_VALUE:g} on {DIMENSIONS[PROBE_DIMENSION].value} alone recalculates "
        f"it to {facts['probe_total_score']} < {REVOCATION_THRESHOLD}: under the default weights "
        "no single signal can revoke a fresh agent (its score cannot fall below 375). Every "
        "revocation was checked to name the probe's own signal (topic, partition, offset) as "
        "its trigger.",
        "What a revocation waits for in the worker: the turn that holds the worker when its "
        "signal is fetched (a signal turn of about 3 ms, a checkpoint slice, or a closing turn "
        "of 5-20 ms, the encoding and sending of its closed agents' states included), the reading "
        "of the records fetched with it, then, applied ahead of the other "
        "agents' signals queued before it, its agent's state written to the changelog "
        "(acks=all) before the revocation is published, and the revocation's own produce and "
        "fetch. The event loop also runs the consumer's fetching between turns: when the worker "
        "is busy most of the time, a signal waits to be fetched too. The load generator, the "
        "broker and the worker share the machine's two cores.",
        "The background runs over every window close of its agents: every agent's window "
        f"closes at once, {GRACE_SECONDS:g} s into the next window, and those closes compete "
        "with probes for the worker, as they do in production. The plots of the worst "
        "revocation latency by moment in the window show what those closes cost.",
        "CPU while each load was sent, from /proc: the worker's CPU time over those seconds "
        "(share of one core: scoring runs on one event loop, so about one core is its "
        "ceiling), and the whole machine's busy share. The rate taken as 100% load is the "
        "throughput benchmark's, a worker applying signals produced beforehand, 50 per agent, so "
        "that its agents' states stay small. Live, the broker and the load generator share the "
        "two cores, the background agents' states grow over the run (each has had well over a "
        "hundred signals by the end of the 50% level, and a state is encoded at every "
        "checkpoint), and the worker's fixed costs (ticks, a checkpoint of every changed agent "
        f"every {STATE_FLUSH_SECONDS:g} s, fetching 30 topic-partitions) weigh more: "
        + "; ".join(
            f"at {level.percent}% of that rate the worker used {level.worker_cpu:.0%} of a core"
            for level in levels
        )
        + ".",
        *backlog_notes(levels),
        "Window emission lag: arrival here minus (window_end + grace), for every update. A "
        "window closes when the first tick at or after end + grace is processed; ticks are sent "
        f"every {TICK_INTERVAL_SECONDS:g} s, so up to one tick interval passes before that tick "
        "is even written. Then the tick travels through Kafka, the batch that holds it closes "
        "the due windows of every agent on its partition, flushes their state to the changelog "
        "before publishing, and publishes the updates: lag is about a tick interval plus that "
        "batch time.",
    ]
    if args.quick:
        result.notes.append(
            "Quick run: both measurements ran at once on two workers and few samples; the "
            "figures check the benchmark, not the worker."
        )
    return result


#: A level whose worst revocation took longer than this is explained by a note (backlog_notes).
BACKLOG_NOTE_MS = 2000.0


def backlog_notes(levels: Sequence[LevelResult]) -> list[str]:
    """Why some revocations of a level took seconds, when some did."""
    slow = [level for level in levels if max(level.latencies_ms) > BACKLOG_NOTE_MS]
    if not slow:
        return []
    shown = "; ".join(
        f"at {level.percent}% load the slowest took {max(level.latencies_ms) / 1000:.1f} s, "
        f"with the worker at {level.worker_cpu:.0%} of a core"
        for level in slow
    )
    return [
        f"Revocations that took seconds: {shown}. Near its ceiling, a window close (every "
        "agent's at once, about a second of work for 10,000 agents) leaves a backlog that "
        "drains only as fast as the headroom allows, and while it drains a critical signal "
        "cannot go ahead of its turn: its place in event-time order is known only once every "
        "topic of its partition has been read past its time, and the merge reads each topic "
        "at most four batches ahead. The plot by moment in the window shows when they were sent."
    ]


@contextlib.contextmanager
def work_directory(kept: Path | None) -> Iterator[Path]:
    """Where the workers keep their state and logs: ``kept`` (left in place, to read the
    workers' logs after a run), else a temporary directory."""
    if kept is not None:
        kept.mkdir(parents=True, exist_ok=True)
        yield kept
        return
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp)


async def run(
    args: argparse.Namespace, max_rate: float
) -> tuple[list[LevelResult], WindowLag, dict[str, Any]]:
    run_id = unique_name("lat")
    with provide_broker() as bootstrap, work_directory(args.work_dir) as workdir:
        spread = WINDOW_SPREAD_S["quick" if args.quick else "full"]

        def revocation() -> Any:
            return revocation_latency(bootstrap, workdir, run_id, args, max_rate)

        def windows() -> Any:
            return window_lag(bootstrap, workdir, run_id, args.window_agents, spread)

        if args.quick:
            # Short runs overlap the two parts: the window part mostly waits for windows to close.
            # A task group, so that one part failing stops the other (and its worker) too.
            try:
                async with asyncio.TaskGroup() as group:
                    revocation_task = group.create_task(revocation())
                    windows_task = group.create_task(windows())
            except ExceptionGroup as failed:
                raise failed.exceptions[0] from failed
            levels, rev_facts = revocation_task.result()
            lag, win_facts = windows_task.result()
        else:
            levels, rev_facts = await revocation()
            lag, win_facts = await windows()
    return levels, lag, {**rev_facts, **win_facts}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run, to check the benchmark")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--max-rate", type=float, help="signals/s taken as 100%% load")
    parser.add_argument("--duration", type=float, help="seconds per load level (60; quick: 8)")
    parser.add_argument("--agents", type=int, help="background agents (10,000; quick: 1,000)")
    parser.add_argument(
        "--window-agents", type=int, help="agents of the window part (5,000; quick: 200)"
    )
    parser.add_argument(
        "--loads",
        type=lambda text: tuple(int(p) for p in text.split(",")),
        default=LOAD_PERCENTS,
        help="load levels in percent, comma-separated (10,50)",
    )
    parser.add_argument(
        "--work-dir", type=Path, help="keep the workers' state and logs here (else: removed)"
    )
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = 8.0 if args.quick else 60.0
    if args.agents is None:
        args.agents = 1_000 if args.quick else 10_000
    if args.window_agents is None:
        args.window_agents = 200 if args.quick else 5_000
    if args.max_rate is not None:
        max_rate, source = args.max_rate, "--max-rate"
    else:
        try:
            max_rate, key = read_max_rate(args.out_dir / "throughput.json")
        except BenchmarkFailure as exc:
            parser.error(str(exc))
        source = f"throughput.json {key}"
    if max_rate <= 0 or args.duration <= 0 or args.agents <= 0 or args.window_agents <= 0:
        parser.error("rates, durations and agent counts must be positive")
    levels, lag, facts = asyncio.run(run(args, max_rate))
    result = build_result(args, max_rate, source, levels, lag, facts)
    result.print()
    path = result.write(args.out_dir)
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
