"""Revocation latency while the fleet-wide API views are read in a loop over many stored agents.

    python -m tests.benchmarks.apiload [--quick] [--out-dir DIR] [--max-rate N] [--agents N]
        [--duration S]

One worker (a subprocess configured by environment, as deployed) starts on a state changelog
already holding ``--agents`` agent states (one million by default), so its fleet-wide views have
that many agents to read. The first 10,000 are the background agents that the load's signals go
to; they start full (every bounded part at its bound, see soakfill.py), the size their signals
keep them at, so that every level measures the same worker. The others are agents seen once
(``--states full``: full as well). Revocation latency is then measured as the
latency benchmark measures it (tests/benchmarks/latency.py: a paced background of ordinary
signals at 10 % of the worker's sustained rate, and one critical probe signal every 75 ms), twice:
first with nothing else asking the worker anything, then while a client (a process of its own)
walks ``/health-report`` and ``/agents/at-risk`` page after page (and starts again at the end)
for the whole level.

Levels alternate, quiet and reading, in the order quiet, read, read, quiet, read, quiet, quiet,
read (each kind's levels sit at the same mean place in the run, so a steady drift of the machine
over it weighs on both alike), each as long as two windows.

What it shows: reading the fleet never holds up scoring. The figure to judge is the ratio of the
p99 latency over all reading levels to that over all quiet levels (target: at most 1.1). Beside
it stands the noise: how far the quiet levels' own p99s lie apart (largest over smallest), which
says how much a ratio of one level to another moves with nothing changed. Writes
<out-dir>/apiload.json (see tests/benchmarks/results.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import threading
import time
import urllib.request
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from streams.kafka.topics import TopicNames
from streams.scoring.agent import AgentState
from streams.scoring.codec import encode_state
from streams.scoring.formulas import total_score
from streams.scoring.model import DEFAULT_WEIGHTS
from tests.benchmarks.latency import (
    PARTITIONS,
    PRIMING_VALUE,
    PROBE_DIMENSION,
    PROBE_INTERVAL_S,
    Arrivals,
    BenchmarkFailure,
    LevelResult,
    probe_scores,
    read_max_rate,
    run_level,
    running_worker,
    signal_bytes,
    wait_until_applied,
)
from tests.benchmarks.results import RESULTS_DIR, Result, Target, percentile
from tests.benchmarks.soakfill import full_state
from tests.benchmarks.state import partition_for, produce_batched
from tests.support.broker import provide_broker
from tests.support.kafka_io import producer as make_producer
from tests.support.kafka_io import unique_name

SCENARIO = "apiload"
TITLE = "Revocation latency while the fleet-wide API views are read"
LOAD_PERCENT = 10
PAGE = 100
P99_RATIO_TARGET = 1.1
#: Stored agents the load's signals go to (the first ones).
BACKGROUND_AGENTS = 10_000
#: Quiet and reading levels in ABBA BAAB order: both kinds' levels sit at the same mean place
#: (4.5), so a linear drift over the run weighs on both alike (ABBA ABBA would not: 4 and 5).
PHASES = ("quiet", "api", "api", "quiet", "api", "quiet", "quiet", "api")


def light_state(rng: random.Random, now_ms: int) -> AgentState:
    """An agent seen once: one signal, one recalculation (about 200 bytes stored)."""
    state = AgentState()
    state.recent[rng.randrange(len(state.recent))].append(rng.choice((0.2, 0.5, 0.9)))
    state.lifetime = [len(values) for values in state.recent]
    state.score = state.published_score = total_score(state.dimension_scores(), DEFAULT_WEIGHTS)
    state.history = [(now_ms, state.score)]
    state.last_signal_at_ms = now_ms
    return state


async def fill(bootstrap: str, topic: str, dids: list[str], kind: str, full_first: int) -> int:
    """A state for each of ``dids`` on the state changelog, every one acknowledged: the first
    ``full_first`` full, the others of ``kind``."""
    rng = random.Random(11)
    now_ms = int(time.time() * 1000)
    rest = full_state if kind == "full" else light_state

    def make(index: int) -> AgentState:
        return (full_state if index < full_first else rest)(rng, now_ms)

    return await produce_batched(
        bootstrap,
        (
            (
                topic,
                partition_for(did.encode(), PARTITIONS),
                did.encode(),
                encode_state(make(index)),
            )
            for index, did in enumerate(dids)
        ),
    )


class Reader:
    """Walks the fleet-wide views page after page until stopped: in a process of its own
    (:func:`read_views_in_own_process`), since a reader parsing pages in the measuring process
    would hold its interpreter and be measured as the worker's latency."""

    def __init__(self, port: str, stop: Any = None) -> None:
        self.base = f"http://127.0.0.1:{port}"
        #: Anything with is_set(): a multiprocessing event when the reader runs elsewhere.
        self.stop = stop if stop is not None else threading.Event()
        self.latencies_ms: list[float] = []
        self.pages = 0
        self.agents_read = 0
        self.partial = 0
        self.errors: list[str] = []

    def add(self, counted: dict[str, Any]) -> None:
        """Add what a reader in another process counted."""
        self.latencies_ms += counted["latencies_ms"]
        self.pages += counted["pages"]
        self.agents_read += counted["agents_read"]
        self.partial += counted["partial"]
        self.errors += counted["errors"]

    def _get(self, path: str) -> Any:
        started = time.perf_counter()
        with urllib.request.urlopen(f"{self.base}{path}", timeout=60) as response:
            body = json.loads(response.read())
        self.latencies_ms.append((time.perf_counter() - started) * 1000)
        self.pages += 1
        self.partial += bool(body.get("partial"))
        self.agents_read += int(body.get("count", 0))
        return body

    def run(self) -> None:
        views = ("/health-report?days=7&", "/agents/at-risk?")
        turn = 0
        while not self.stop.is_set():
            view = views[turn % 2]
            turn += 1
            cursor = None
            while not self.stop.is_set():
                query = f"{view}limit={PAGE}" + (f"&cursor={cursor}" if cursor else "")
                try:
                    cursor = self._get(query)["next_cursor"]
                except Exception as exc:
                    self.errors.append(repr(exc))
                    cursor = None
                if cursor is None:
                    break


def read_views_in_own_process(port: str, stop: Any, results: Any) -> None:
    """Run a :class:`Reader` until ``stop`` is set, then put what it counted on ``results``."""
    reader = Reader(port, stop)
    reader.run()
    results.put(
        {
            "latencies_ms": reader.latencies_ms,
            "pages": reader.pages,
            "agents_read": reader.agents_read,
            "partial": reader.partial,
            "errors": reader.errors[:20],
        }
    )


async def measure(
    bootstrap: str, workdir: Path, args: argparse.Namespace, max_rate: float
) -> tuple[LevelResult, LevelResult, Reader]:
    prefix = unique_name("apiload") + "."
    names = TopicNames(prefix)
    run = prefix.rstrip(".")
    residents = [f"did:mesh:{run}-res-{i:07d}" for i in range(args.agents)]
    background_dids = residents[:BACKGROUND_AGENTS]
    probes_per_level = max(1, int(args.duration / PROBE_INTERVAL_S))
    probe_dids = [
        [f"did:mesh:{run}-probe-{level}-{i:05d}" for i in range(probes_per_level)]
        for level in range(len(PHASES))
    ]
    _, expected_total = probe_scores()

    async def prepare(topics: TopicNames) -> None:
        started = time.monotonic()
        # The background agents start full, at the size their signals keep them at: agents
        # that grew from nothing over the run would make each level cost more than the one
        # before, and the levels' order cancels only a steady drift.
        written = await fill(
            bootstrap, topics.agent_state, residents, args.states, len(background_dids)
        )
        print(f"  {written:,} states written in {time.monotonic() - started:.0f} s")

    async with running_worker(
        bootstrap, prefix, workdir, "apiload-worker", prepare=prepare
    ) as worker:
        revocations = Arrivals(bootstrap, names.revocations, time.perf_counter)
        producer = make_producer(bootstrap)
        probe_producer = make_producer(bootstrap, linger_ms=0)
        await revocations.start()
        await producer.start()
        await probe_producer.start()
        try:
            priming = 0
            for dids in probe_dids:
                for did in dids:
                    for d, topic in enumerate(names.signals):
                        if d != PROBE_DIMENSION:
                            await producer.send(
                                topic, signal_bytes(did, PRIMING_VALUE), key=did.encode()
                            )
                            priming += 1
            await producer.flush()
            await wait_until_applied(worker, priming, 300.0, "applying the priming signals")
            applied = priming
            rng = random.Random(5)
            levels = []
            port = worker.env["TRUST_WEB_PORT"]
            reader = Reader(port)
            spawn = get_context("spawn")
            for number, phase in enumerate(PHASES):
                process = None
                if phase == "api":
                    stop, results = spawn.Event(), spawn.Queue()
                    process = spawn.Process(
                        target=read_views_in_own_process, args=(port, stop, results), daemon=True
                    )
                    process.start()
                try:
                    level = await run_level(
                        bootstrap=bootstrap,
                        percent=LOAD_PERCENT,
                        rate=max_rate * LOAD_PERCENT / 100,
                        duration=args.duration,
                        worker=worker,
                        revocations=revocations,
                        probe_producer=probe_producer,
                        names=names,
                        background_dids=background_dids,
                        probe_dids=probe_dids[number],
                        applied_before=applied,
                        expected_total=expected_total,
                        rng=rng,
                    )
                finally:
                    if process is not None:
                        stop.set()
                        counted = await asyncio.to_thread(results.get, True, 120)
                        await asyncio.to_thread(process.join, 30)
                        reader.add(counted)
                applied += level.background.sent + level.probes
                levels.append(level)
                print(
                    f"  level {number + 1}/{len(PHASES)} ({phase}): revocation p99 "
                    f"{percentile(level.latencies_ms, 99):.0f} ms"
                )
        finally:
            await probe_producer.stop()
            await producer.stop()
            await revocations.stop()
    if not reader.pages:
        raise BenchmarkFailure(f"no page of the fleet-wide views was read: {reader.errors[:3]}")
    return levels, reader


def build_result(levels: list[LevelResult], reader: Reader, args: argparse.Namespace) -> Result:
    result = Result(SCENARIO, TITLE)
    result.parameters = {
        "stored_agents": args.agents,
        "load_percent": LOAD_PERCENT,
        "duration_s": args.duration,
        "page": PAGE,
        "states": args.states,
        "levels": " ".join(PHASES),
    }
    pooled: dict[str, list[float]] = {"quiet": [], "api": []}
    level_p99: dict[str, list[float]] = {"quiet": [], "api": []}
    for phase, level in zip(PHASES, levels, strict=True):
        pooled[phase] += level.latencies_ms
        level_p99[phase].append(percentile(level.latencies_ms, 99))
    p99 = {}
    for name, values in pooled.items():
        label = "without API reads" if name == "quiet" else "while the views are read"
        result.add(
            f"revocation_p50_ms_{name}",
            f"revocation latency p50, {label}",
            percentile(values, 50),
            "ms",
        )
        p99[name] = percentile(values, 99)
        result.add(f"revocation_p99_ms_{name}", f"revocation latency p99, {label}", p99[name], "ms")
        result.add(
            f"revocation_max_ms_{name}", f"revocation latency max, {label}", max(values), "ms"
        )
    result.add(
        "revocation_p99_ratio",
        "p99 while the views are read / p99 without (all levels of each kind)",
        p99["api"] / p99["quiet"],
        "ratio",
        Target("<=", P99_RATIO_TARGET),
    )
    result.add(
        "revocation_p99_noise",
        "noise: largest / smallest p99 of the quiet levels alone",
        max(level_p99["quiet"]) / min(level_p99["quiet"]),
        "ratio",
    )
    result.notes.append(
        "p99 per level, in order: "
        + ", ".join(
            f"{phase} {percentile(level.latencies_ms, 99):.0f} ms (worker CPU "
            f"{level.worker_cpu:.0%} of a core)"
            for phase, level in zip(PHASES, levels, strict=True)
        )
        + ". The levels' order cancels a steady drift of the machine over the run from the "
        "ratio, not a step or a burst; when the quiet levels alone lie further apart (the "
        "noise) than the ratio lies from 1, the ratio shows only that reading adds no more "
        "than that noise."
    )
    result.add("api_pages_read", "pages of the fleet-wide views read", reader.pages, "pages")
    result.add("api_agents_read", "agents in those pages", reader.agents_read, "agents")
    if reader.latencies_ms:
        result.add("api_page_p50_ms", "page latency p50", percentile(reader.latencies_ms, 50), "ms")
        result.add("api_page_p99_ms", "page latency p99", percentile(reader.latencies_ms, 99), "ms")
    result.notes.append(
        f"{args.agents:,} agent states stored (the {min(args.agents, BACKGROUND_AGENTS):,} "
        f"the load goes to full, the others {args.states}); "
        f"{len(reader.errors)} page requests failed"
        + (f" (e.g. {reader.errors[0]})" if reader.errors else "")
        + f"; {reader.partial} pages were partial."
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20,000 agents, 10 s per level")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--max-rate", type=float, help="the worker's sustained signals/s")
    parser.add_argument("--agents", type=int)
    parser.add_argument("--duration", type=float)
    parser.add_argument(
        "--states",
        choices=("light", "full"),
        default="light",
        help="stored agents other than the background ones: seen once (default), or with full "
        "histories (soakfill.py: about ten times the bytes, and the worker restores a million "
        "of them for minutes)",
    )
    args = parser.parse_args(argv)
    args.agents = args.agents or (20_000 if args.quick else 1_000_000)
    args.duration = args.duration or (10.0 if args.quick else 60.0)  # two windows a level
    if args.max_rate is not None:
        max_rate = args.max_rate
    else:
        max_rate, _ = read_max_rate(args.out_dir / "throughput.json")
    with provide_broker() as bootstrap, tempfile.TemporaryDirectory() as tmp:
        try:
            levels, reader = asyncio.run(measure(bootstrap, Path(tmp), args, max_rate))
        except BenchmarkFailure as exc:
            print(f"apiload: {exc}", file=sys.stderr)
            return 1
    result = build_result(levels, reader, args)
    result.print()
    print(f"wrote {result.write(args.out_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
