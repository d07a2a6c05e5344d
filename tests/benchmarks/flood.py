"""Fresh-DID flood: what each never-seen agent costs a worker, in memory and in RocksDB.

    python -m tests.benchmarks.flood [--dids N] [--cache-agents C] [--ttl-days D] [--quick]
        [--out-dir DIR] [--work-dir DIR]

One real worker (a subprocess configured by environment, as it is deployed) on fresh topics of a
real broker (KAFKA_BOOTSTRAP_SERVERS, else the local one). Once it is ready, its resident memory
is read (the baseline); then N signals (1,000,000), each for a DID never seen before, are produced
as fast as the producer goes, so the worker takes them at its own maximum rate. RSS and the
applied count are sampled as it goes. RSS is read again once every signal is applied and once
every agent's window has closed (each state then holds its last score update, as a live agent's
does); then the worker is stopped with SIGTERM (RocksDB flushes its memtables) and its databases
are measured.

Figures: RSS growth per agent ((RSS - baseline) / N, at both moments), the marginal growth past
the state cache (least-squares slope of RSS against agents applied, beyond twice
TRUST_STATE_CACHE_AGENTS), RocksDB bytes per agent, and the cache size itself. Writes
<out-dir>/flood.json (see tests/benchmarks/results.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from streams.kafka.topicadmin import ensure_topics
from streams.kafka.topics import TopicNames
from streams.scoring.model import DIMENSIONS
from streams.settings import Settings
from tests.benchmarks import state
from tests.benchmarks.latency import BACKGROUND_VALUES
from tests.benchmarks.results import RESULTS_DIR, Result, Series
from tests.support.broker import provide_broker
from tests.support.kafka_io import unique_name
from tests.support.signals import signal_value
from tests.support.worker import WorkerProcess, worker_env

SCENARIO = "flood"
TITLE = "Memory and disk per never-seen agent"

DEFAULT_DIDS = 1_000_000
QUICK_DIDS = 20_000
PARTITIONS = 6
SOURCE = "flood-benchmark"
STATE_CACHE_AGENTS = int(Settings.model_fields["state_cache_agents"].default)
_DEFAULTS = Settings.model_fields
WINDOW_SECONDS = float(_DEFAULTS["window_seconds"].default)
GRACE_SECONDS = float(_DEFAULTS["grace_seconds"].default)
TICK_INTERVAL_SECONDS = float(_DEFAULTS["tick_interval_seconds"].default)
#: A quick run uses short windows, as the state benchmark's does: closing is due in seconds.
QUICK_WINDOW_SECONDS = 2.0
QUICK_GRACE_SECONDS = 1.0
SAMPLE_S = 0.25
#: The slope is fitted over this many cache sizes and more, where the cache is full.
PAST_CACHE = 2
MIN_SLOPE_POINTS = 5
MIB = 1024 * 1024


def records(
    run: str, dids: int, names: TopicNames, seed: int = 3
) -> Iterator[tuple[str, int, bytes, bytes]]:
    """One ordinary signal for each of ``dids`` new agents, on the dimensions in turn."""
    rng = random.Random(seed)
    for i in range(dids):
        did = f"did:mesh:{run}-{i:07d}"
        key = did.encode()
        value = signal_value(did, rng.choice(BACKGROUND_VALUES), source=SOURCE)
        yield names.signals[i % len(DIMENSIONS)], state.partition_for(key, PARTITIONS), key, value


def slope(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of y over x; None when x does not vary."""
    n = len(points)
    if n < 2:
        return None
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if spread == 0:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread


def sample(worker: WorkerProcess) -> tuple[float, float]:
    """(signals applied, RSS in MiB), read one after the other."""
    applied = state.applied(worker)
    return applied, state.memory_mib(state.pid_of(worker))[0]


@dataclass(slots=True)
class Flooded:
    """What one flood measured."""

    prefix: str
    produced: int
    produce_s: float
    signals_per_s: float
    close_s: float
    baseline_mib: float
    applied_mib: float
    closed_mib: float
    peak_mib: float
    #: (never-seen agents applied, RSS in MiB) while the flood was applied.
    points: list[tuple[float, float]]
    disk: state.DiskUsage
    metrics: dict[str, float]


async def flood(bootstrap: str, workdir: Path, args: argparse.Namespace) -> Flooded:
    run = unique_name("flood")
    prefix = f"{run}."
    names = TopicNames(prefix)
    await ensure_topics(
        Settings(kafka_bootstrap_servers=bootstrap, topic_prefix=prefix, partitions=PARTITIONS)
    )
    extra = {"agent_ttl_days": args.ttl_days} if args.ttl_days is not None else {}
    env = worker_env(
        bootstrap,
        prefix,
        workdir / "state",
        partitions=PARTITIONS,
        window_seconds=f"{args.window_seconds:g}",
        grace_seconds=f"{args.grace_seconds:g}",
        tick_interval_seconds=f"{TICK_INTERVAL_SECONDS:g}",
        state_cache_agents=str(args.cache_agents),
        **extra,
    )
    worker = WorkerProcess(env=env, log_path=workdir / "flood-worker.log").start()
    try:
        await asyncio.to_thread(worker.wait_until_ready, 120.0)
        baseline = state.memory_mib(state.pid_of(worker))[0]
        points: list[tuple[float, float]] = [(0.0, baseline)]

        def take(_now: float) -> None:
            with contextlib.suppress(OSError):
                points.append(sample(worker))

        started = time.perf_counter()
        producing = asyncio.create_task(
            state.produce_batched(bootstrap, records(run, args.dids, names))
        )
        progress = await state.wait_until_applied(
            [worker],
            args.dids,
            timeout=120 + args.dids / 1000,
            what="applying the flood",
            sample=take,
            poll=SAMPLE_S,
        )
        produced = await producing
        produce_s = time.perf_counter() - started
        applied_rss = state.memory_mib(state.pid_of(worker))[0]
        close_s = await wait_for_closes(worker, args)
        closed_rss, peak_rss = state.memory_mib(state.pid_of(worker))
        metrics = await asyncio.to_thread(state.scrape, worker)
        await asyncio.to_thread(state.stop, worker)
    finally:
        worker.ensure_stopped()
    return Flooded(
        prefix=prefix,
        produced=produced,
        produce_s=produce_s,
        signals_per_s=progress.rate(args.dids),
        close_s=close_s,
        baseline_mib=baseline,
        applied_mib=applied_rss,
        closed_mib=closed_rss,
        peak_mib=peak_rss,
        points=points,
        disk=state.rocksdb_usage(workdir / "state"),
        metrics=metrics,
    )


def record(result: Result, args: argparse.Namespace, f: Flooded) -> None:
    """The flood's figures, series and notes."""
    n = args.dids
    per_agent = MIB / n
    result.parameters.update({"topic_prefix": f.prefix, "signals_produced": f.produced})
    result.add("flood_dids", "never-seen DIDs, one signal each", n, "agents")
    result.add(
        "flood_state_cache_agents",
        "state cache size (TRUST_STATE_CACHE_AGENTS)",
        args.cache_agents,
        "agents",
    )
    result.add(
        "flood_signals_per_s", "applied per second (first to last)", f.signals_per_s, "signals/s"
    )
    result.add("flood_produce_s", "producing the flood took", f.produce_s, "s")
    result.add(
        "flood_close_s",
        "every agent's window closed, counted from when all were due",
        f.close_s,
        "s",
    )
    result.add("flood_rss_baseline_mib", "RSS of the ready, idle worker", f.baseline_mib, "MiB")
    result.add("flood_rss_applied_mib", "RSS once every signal was applied", f.applied_mib, "MiB")
    result.add("flood_rss_closed_mib", "RSS once every window had closed", f.closed_mib, "MiB")
    result.add("flood_peak_rss_mib", "peak RSS (VmHWM)", f.peak_mib, "MiB")
    result.add(
        "flood_rss_bytes_per_agent_applied",
        "RSS growth per agent, every signal applied",
        (f.applied_mib - f.baseline_mib) * per_agent,
        "bytes",
    )
    result.add(
        "flood_rss_bytes_per_agent",
        "RSS growth per agent, every window closed",
        (f.closed_mib - f.baseline_mib) * per_agent,
        "bytes",
    )
    past = [(a, rss) for a, rss in f.points if a >= PAST_CACHE * args.cache_agents]
    marginal = slope(past) if len(past) >= MIN_SLOPE_POINTS else None
    if marginal is not None:
        result.add(
            "flood_rss_marginal_bytes_per_agent",
            f"RSS growth per agent past {PAST_CACHE}x the cache (slope while applying)",
            marginal * MIB,
            "bytes",
        )
    result.add(
        "flood_rocksdb_bytes_per_agent",
        "RocksDB data files per agent",
        f.disk.data_bytes / n,
        "bytes",
    )
    result.add(
        "flood_rocksdb_all_files_bytes_per_agent",
        "RocksDB directory, every file, per agent",
        f.disk.all_bytes / n,
        "bytes",
    )
    if "trust_live_agents" in f.metrics:
        result.add(
            "flood_live_agents",
            "live agents reported by the worker",
            f.metrics["trust_live_agents"],
            "agents",
        )
    result.series["worker RSS by agents applied"] = Series(
        "never-seen agents applied", "RSS (MiB)", state.downsample(f.points)
    )
    result.notes += [
        f"Every signal is for a DID the worker has never seen: each creates a state, opens a "
        f"window and is closed {args.window_seconds:g} s + {args.grace_seconds:g} s later. "
        f"The worker keeps up to {args.cache_agents:,} decoded states in memory "
        "(TRUST_STATE_CACHE_AGENTS); past that, what one more agent costs is memory the worker "
        "holds besides the cache.",
        "RSS growth per agent: (RSS - RSS of the ready, idle worker) / agents. The marginal "
        f"figure is the least-squares slope of RSS against agents applied, over the samples past "
        f"{PAST_CACHE} times the cache size, taken while the flood was applied.",
        "RocksDB data files: *.sst, write-ahead logs and manifests of every partition's database "
        "after SIGTERM, as the state benchmark measures them.",
    ]
    if marginal is None:
        result.notes.append(
            f"Too few samples past {PAST_CACHE} times the cache size for a marginal figure."
        )


async def wait_for_closes(worker: WorkerProcess, args: argparse.Namespace) -> float:
    """Wait until every agent's window has closed; seconds from when all were due."""
    due = args.window_seconds + args.grace_seconds + 2 * TICK_INTERVAL_SECONDS + 1
    await asyncio.sleep(due)  # the windows opened last are not due before this
    started = time.monotonic()
    while True:
        closed = (await asyncio.to_thread(state.scrape, worker)).get(
            "trust_windows_closed_total", 0
        )
        if closed >= args.dids:
            return time.monotonic() - started
        state.require_running(worker, "closing windows")
        if time.monotonic() - started > 120 + args.dids / 2_000:
            raise state.BenchmarkFailure(
                f"{closed:.0f} score updates for {args.dids} agents long after every window "
                "should have closed"
            )
        await asyncio.sleep(0.25)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--dids", type=int, help=f"fresh DIDs ({DEFAULT_DIDS:,})")
    parser.add_argument("--cache-agents", type=int, default=STATE_CACHE_AGENTS)
    parser.add_argument("--ttl-days", help="TRUST_AGENT_TTL_DAYS (default: the worker's)")
    parser.add_argument("--window-seconds", type=float)
    parser.add_argument("--grace-seconds", type=float)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_DIDS:,} DIDs, 2 s windows")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--work-dir", type=Path, help="keep the worker's state and log here")
    args = parser.parse_args(argv)
    if args.dids is None:
        args.dids = QUICK_DIDS if args.quick else DEFAULT_DIDS
    if args.window_seconds is None:
        args.window_seconds = QUICK_WINDOW_SECONDS if args.quick else WINDOW_SECONDS
    if args.grace_seconds is None:
        args.grace_seconds = QUICK_GRACE_SECONDS if args.quick else GRACE_SECONDS
    if args.dids < 1 or args.cache_agents < 0:
        parser.error("--dids must be at least 1 and --cache-agents not negative")
    result = Result(
        SCENARIO,
        TITLE,
        parameters={
            "quick": args.quick,
            "dids": args.dids,
            "state_cache_agents": args.cache_agents,
            "agent_ttl_days": args.ttl_days if args.ttl_days is not None else "worker default",
            "partitions": PARTITIONS,
            "window_seconds": args.window_seconds,
            "grace_seconds": args.grace_seconds,
        },
    )
    print(
        f"flood: {args.dids:,} never-seen DIDs, state cache {args.cache_agents:,} agents",
        flush=True,
    )
    with (
        provide_broker() as bootstrap,
        state.work_directory(args.work_dir, "bench-flood-") as workdir,
    ):
        record(result, args, asyncio.run(flood(bootstrap, workdir, args)))
    result.print()
    print(f"written to {result.write(args.out_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
