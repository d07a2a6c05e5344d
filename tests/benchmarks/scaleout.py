"""Scale-out: the same backlog applied by one worker, then by two.

    python -m tests.benchmarks.scaleout [--signals N] [--agents A] [--quick] [--out-dir DIR]

A backlog (N signals over A agents: random agent, dimension and value) is produced to fresh topics
of a real broker (KAFKA_BOOTSTRAP_SERVERS, else the local one), and one worker (a subprocess
configured by environment, as deployed) applies it all, timed from the first signal it applies to
the last, read from its /metrics. Then the same backlog goes to fresh topics again and two workers
of one consumer group are started together, so the partitions are split between them: timed from
the first signal either applies until their counts add up to N. Together they must apply every
signal exactly once: a sum above N fails the run, as does a sum that never reaches it.

Writes <out-dir>/scaleout.json (see tests/benchmarks/results.py): both rates, the speed-up and
each worker's share.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from streams.kafka.topicadmin import ensure_topics
from streams.kafka.topics import TopicNames
from streams.scoring.model import DIMENSIONS
from streams.settings import Settings
from tests.benchmarks.results import RESULTS_DIR, Result, Series
from tests.benchmarks.state import (
    BenchmarkFailure,
    metrics_text,
    partition_for,
    produce_batched,
    scrape,
    stop,
    wait_until_applied,
    work_directory,
)
from tests.support.broker import provide_broker
from tests.support.kafka_io import unique_name
from tests.support.signals import signal_value
from tests.support.worker import WorkerProcess, worker_env

SCENARIO = "scaleout"
TITLE = "Scale-out: one worker against two"

DEFAULT_SIGNALS = 300_000
DEFAULT_AGENTS = 10_000
QUICK_SIGNALS = 3_000
QUICK_AGENTS = 300
PARTITIONS = 6
#: As in the throughput benchmark; 0.2 is critical (an immediate recalculation).
VALUES = (1.0, 0.9, 0.7, 0.5, 0.2)
SOURCE = "scaleout-benchmark"

_ASSIGNED = re.compile(
    r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})\] .*Assigned partitions \[([\d, ]*)\]", re.M
)
_RESTORE = re.compile(
    r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})\] .*"
    r"(Restoring partitions|Restored partitions)",
    re.M,
)
_LAG = re.compile(r'^trust_consumer_lag\{[^}]*topic="([^"]+)"[^}]*\} (\S+)$', re.M)
_APPLIED = re.compile(r"^trust_signals_applied_total(?:\{[^}]*\})? (\S+)$", re.M)


@dataclass(frozen=True, slots=True)
class Backlog:
    """The same signals for both runs: (agent index, dimension index, value)."""

    run: str
    agents: int
    signals: list[tuple[int, int, float]]

    @classmethod
    def make(cls, run: str, agents: int, count: int, seed: int = 1) -> Backlog:
        rng = random.Random(seed)
        return cls(
            run,
            agents,
            [
                (rng.randrange(agents), rng.randrange(len(DIMENSIONS)), rng.choice(VALUES))
                for _ in range(count)
            ],
        )

    def records(
        self, names: TopicNames, partitions: int
    ) -> Iterator[tuple[str, int, bytes, bytes]]:
        dids = [f"did:mesh:{self.run}-{i:06d}" for i in range(self.agents)]
        keys = [did.encode() for did in dids]
        placed = [partition_for(key, partitions) for key in keys]
        topics = names.signals
        for agent, dimension, value in self.signals:
            yield (
                topics[dimension],
                placed[agent],
                keys[agent],
                signal_value(dids[agent], value, source=SOURCE),
            )


@dataclass(slots=True)
class Run:
    workers: int
    seconds: float
    rate: float
    #: Signals each worker applied, and the partitions it owned last.
    applied: list[float]
    partitions: list[list[int]]
    #: How often each worker was assigned partitions (1: no rebalance after its first).
    assignments: list[int]
    #: Seconds from the start until the last assignment, and until the last signal was applied.
    settled_after: float
    done_after: float
    #: Seconds each worker spent restoring the changelog of partitions it was given.
    restoring: list[float]
    redelivered: float
    between_two_polls: bool


def restoring_seconds(log: str, started_wall: float, until: float) -> float:
    """Seconds the worker spent reading the changelog of partitions it was given (from
    "Restoring partitions" to "Restored partitions"), up to ``until`` seconds after start."""
    total = 0.0
    began: float | None = None
    for stamp, millis, what in _RESTORE.findall(log):
        at = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S").timestamp() + int(millis) / 1000
        at -= started_wall
        if at > until:
            break
        if what.startswith("Restoring"):
            began = at
        elif began is not None:
            total += at - began
            began = None
    if began is not None:
        total += until - began
    return total


def assignments(log: str, started_wall: float) -> list[tuple[float, list[int]]]:
    """Each time the worker was assigned partitions: (seconds since start, partitions)."""
    found = []
    for stamp, millis, listed in _ASSIGNED.findall(log):
        at = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S").timestamp() + int(millis) / 1000
        found.append((at - started_wall, [int(p) for p in listed.split(",") if p.strip()]))
    return found


def signal_lag(text: str, names: TopicNames) -> float:
    """Signals not yet read, from a worker's trust_consumer_lag (ticks are always arriving, so
    the total lag is never a sign of being done)."""
    signals = set(names.signals)
    return sum(float(value) for topic, value in _LAG.findall(text) if topic in signals)


async def confirm_exactly_once(
    workers: list[WorkerProcess], names: TopicNames, expected: int, timeout: float = 60
) -> list[float]:
    """Once the counts add up, wait until no worker has a signal left to read and read them
    again: a count that reached the total while the other worker still had signals to apply
    would hide a double application. Each worker's count."""
    deadline = time.monotonic() + timeout
    while True:
        texts = await asyncio.gather(*(asyncio.to_thread(metrics_text, w) for w in workers))
        counts = [sum(float(v) for v in _APPLIED.findall(text)) for text in texts]
        if sum(counts) != expected:
            raise BenchmarkFailure(
                f"the workers applied {counts} signals, {sum(counts):.0f} in all; "
                f"{expected} were sent"
            )
        if all(signal_lag(text, names) == 0 for text in texts):
            return counts
        if time.monotonic() > deadline:
            raise BenchmarkFailure(f"signals still unread {timeout:.0f} s after all were applied")
        await asyncio.sleep(0.2)


async def wait_for_balance(
    workers: list[WorkerProcess], started_wall: float, partitions: int, timeout: float = 120
) -> None:
    """Until every worker owns partitions, together all of them, and each is ready."""
    deadline = time.monotonic() + timeout
    while True:
        latest = [assignments(w.log_since_start(), started_wall) for w in workers]
        owned = [a[-1][1] if a else [] for a in latest]
        if all(owned) and sorted(p for o in owned for p in o) == list(range(partitions)):
            break
        if time.monotonic() > deadline:
            raise BenchmarkFailure(f"the workers did not share the partitions: {owned}")
        await asyncio.sleep(0.25)
    for worker in workers:
        await asyncio.to_thread(worker.wait_until_ready, max(1.0, deadline - time.monotonic()))


async def apply_backlog(
    bootstrap: str, backlog: Backlog, workers: int, workdir: Path, partitions: int
) -> Run:
    """Start ``workers`` workers on fresh topics, let them share the partitions, then produce
    the backlog and time them applying it."""
    prefix = unique_name(f"so{workers}") + "."
    names = TopicNames(prefix)
    await ensure_topics(
        Settings(kafka_bootstrap_servers=bootstrap, topic_prefix=prefix, partitions=partitions)
    )
    started = [
        WorkerProcess(
            env=worker_env(
                bootstrap, prefix, workdir / f"state-{workers}-{i}", partitions=partitions
            ),
            log_path=workdir / f"worker-{workers}-{i}.log",
        )
        for i in range(workers)
    ]
    started_wall = time.time()
    for worker in started:
        worker.start()
    try:
        # Steady state, not start-up: the first worker to join would otherwise take every
        # partition and drain much of the backlog before the other one is given its share.
        await wait_for_balance(started, started_wall, partitions)
        sent = await produce_batched(bootstrap, backlog.records(names, partitions))
        assert sent == len(backlog.signals)
        progress = await wait_until_applied(
            started,
            sent,
            timeout=60 + sent / 500,
            what=f"applying the backlog with {workers} worker(s)",
        )
        done_after = time.time() - started_wall
        applied = await confirm_exactly_once(started, names, sent)
        # Read now: stopping one worker hands its partitions to the other.
        assigned = [
            [a for a in assignments(worker.log_since_start(), started_wall) if a[0] <= done_after]
            for worker in started
        ]
        restoring = [
            restoring_seconds(worker.log_since_start(), started_wall, done_after)
            for worker in started
        ]
        redelivered = 0.0
        for worker in started:
            metrics = await asyncio.to_thread(scrape, worker)
            redelivered += metrics.get("trust_signals_redelivered_total", 0.0)
        for worker in started:
            await asyncio.to_thread(stop, worker)
    finally:
        for worker in started:
            worker.ensure_stopped()
    return Run(
        workers=workers,
        seconds=progress.seconds,
        rate=progress.rate(sent),
        applied=applied,
        partitions=[a[-1][1] if a else [] for a in assigned],
        assignments=[len(a) for a in assigned],
        settled_after=max((a[-1][0] for a in assigned if a), default=0.0),
        done_after=done_after,
        restoring=restoring,
        redelivered=redelivered,
        between_two_polls=progress.between_two_polls,
    )


async def run(args: argparse.Namespace) -> Result:
    backlog = Backlog.make(unique_name("so"), args.agents, args.signals)
    result = Result(
        SCENARIO,
        TITLE,
        parameters={
            "quick": args.quick,
            "signals": args.signals,
            "agents": args.agents,
            "partitions": args.partitions,
        },
    )
    with provide_broker() as bootstrap, work_directory(args.work_dir, "bench-scaleout-") as work:
        print(f"one worker, {args.signals:,} signals over {args.agents:,} agents", flush=True)
        one = await apply_backlog(bootstrap, backlog, 1, work, args.partitions)
        print("two workers, the same backlog on fresh topics", flush=True)
        two = await apply_backlog(bootstrap, backlog, 2, work, args.partitions)

    result.add("one_worker_signals_per_s", "one worker", one.rate, "signals/s")
    result.add("two_workers_signals_per_s", "two workers together", two.rate, "signals/s")
    result.add("speedup", "two workers against one", two.rate / one.rate, "ratio")
    result.add("one_worker_s", "one worker: first to last signal applied", one.seconds, "s")
    result.add("two_workers_s", "two workers: first to last signal applied", two.seconds, "s")
    total = sum(two.applied)
    for i, count in enumerate(two.applied, start=1):
        result.add(
            f"worker_{i}_share",
            f"share of the signals applied by worker {i}",
            100 * count / total,
            "%",
        )
    result.add("two_workers_signals_applied", "signals applied by both workers", total, "signals")
    result.series["signals per second by worker count"] = Series(
        "workers",
        "signals/s",
        [("1 worker", round(one.rate, 1)), ("2 workers", round(two.rate, 1))],
        kind="bar",
    )
    result.series["share of the backlog per worker"] = Series(
        "worker",
        "% of signals applied",
        [(f"worker {i}", round(100 * c / total, 2)) for i, c in enumerate(two.applied, start=1)],
        kind="bar",
    )
    result.parameters.update(
        {
            "two_workers_applied": two.applied,
            "two_workers_partitions": two.partitions,
            "two_workers_assignments": two.assignments,
            "two_workers_settled_after_s": round(two.settled_after, 3),
            "two_workers_restoring_s": [round(r, 3) for r in two.restoring],
            "redelivered": {"one_worker": one.redelivered, "two_workers": two.redelivered},
        }
    )
    cores = os.cpu_count()
    result.notes.append(
        f"This machine has {cores} cores, shared by the broker, the worker(s) and this process "
        "(which only polls /metrics while the workers run). Two workers on one host measure "
        "how the work splits and what the rebalance costs; a speed-up near the core count needs "
        "a host (and a broker) per worker."
    )
    moves = sum(max(0, n - 1) for n in two.assignments)
    result.notes.append(
        f"Two workers: partitions {two.partitions} when the last signal was applied "
        f"({two.done_after:.1f} s after they were started); the last assignment came "
        f"{two.settled_after:.1f} s after the start"
        + (f", after {moves} reassignment(s) while they joined" if moves else "")
        + ". Timed from the first signal either applied, so joining the group is part of the time."
    )
    bounded = [run.workers for run in (one, two) if run.between_two_polls]
    if bounded:
        result.notes.append(
            f"With {' and '.join(map(str, bounded))} worker(s) the whole backlog was applied "
            "between two polls of /metrics: that rate is timed over the interval between the "
            "polls, a lower bound. Use a larger backlog for a figure to quote."
        )
    result.add(
        "two_workers_restoring_s",
        "two workers: longest changelog restore during the run",
        max(two.restoring),
        "s",
    )
    if max(two.restoring) > 0:
        result.notes.append(
            "A partition that moves is replayed from its changelog before its signals flow "
            f"again: the workers spent {', '.join(f'{r:.1f}' for r in two.restoring)} s "
            "restoring the state of partitions they were given while the backlog was applied."
        )
    if 0 in two.applied:
        result.notes.append(
            "One worker applied the whole backlog before the other was given partitions: the "
            "backlog is too small for this to say anything about scaling out."
        )
    if one.redelivered or two.redelivered:
        result.notes.append(
            f"Redeliveries recognised and skipped: {one.redelivered:.0f} with one worker, "
            f"{two.redelivered:.0f} with two (signals read again after a partition moved)."
        )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--signals", type=int, help=f"default {DEFAULT_SIGNALS:,}")
    parser.add_argument("--agents", type=int, help=f"default {DEFAULT_AGENTS:,}")
    parser.add_argument("--partitions", type=int, default=PARTITIONS)
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_SIGNALS:,} signals over {QUICK_AGENTS:,}"
    )
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument(
        "--work-dir",
        type=Path,
        help="keep state directories and worker logs here (default: a "
        "temporary directory, removed at the end)",
    )
    args = parser.parse_args(argv)
    if args.signals is None:
        args.signals = QUICK_SIGNALS if args.quick else DEFAULT_SIGNALS
    if args.agents is None:
        args.agents = QUICK_AGENTS if args.quick else DEFAULT_AGENTS
    if args.signals < 1 or args.agents < 1:
        parser.error("--signals and --agents must be at least 1")
    started = time.monotonic()
    result = asyncio.run(run(args))
    result.print()
    print(f"wrote {result.write(args.out_dir)} in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
