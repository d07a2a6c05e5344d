"""Where a worker's time goes while it drains a backlog: a sampling profile, summarised.

    python -m tests.benchmarks.profile [--signals N] [--agents A,B] [--quick] [--out-dir DIR]

Runs the throughput setup (one worker, a backlog of signals already in Kafka) with py-spy
sampling the worker, then attributes every sample to the component its innermost recognised
frame belongs to. Writes ``profile.json`` (shares per component, the heaviest functions) and the
raw collapsed stacks beside it (``profile-stacks-<agents>.txt``) for a flame graph. One run per
agent count (default 10,000 and 1,000,000): what dominates changes with the number of agents.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from tests.benchmarks.results import RESULTS_DIR, Result, Series
from tests.benchmarks.throughput import (
    agent_count_tag,
    make_signals,
    prepare_backlog,
    worker_rate,
)
from tests.support.broker import provide_broker

#: (component, substrings of a frame "function (file:line)") from the most specific on; the
#: innermost frame that matches one decides where a sample's time went.
COMPONENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("state codec (encode/decode)", ("streams/scoring/codec.py", "streams/scoring/decoding.py")),
    ("scoring model", ("streams/scoring/",)),
    ("signal validation (intake, pydantic)", ("streams/processing/intake.py", "pydantic")),
    ("output messages", ("streams/processing/outputs.py", "streams/messages.py")),
    ("state store (RocksDB, LRU)", ("streams/state/store.py", "rocksdict")),
    ("compression (zstd)", ("aiokafka/codec.py", "cramjam")),
    ("window schedule", ("streams/processing/closing.py",)),
    ("producer (changelog, outputs)", ("aiokafka/producer",)),
    ("signal fetch (aiokafka consumer)", ("aiokafka/consumer", "aiokafka/record")),
    ("kafka client I/O", ("aiokafka/",)),
    (
        "pipeline and feed bookkeeping",
        ("streams/processing/pipeline.py", "streams/processing/feed.py"),
    ),
    ("metrics and HTTP", ("prometheus_client", "aiohttp", "streams/web/observability.py")),
    ("Faust and mode (ticks, commands, timers)", ("faust/", "mode/")),
    ("event loop", ("asyncio/", "uvloop")),
)


def component_of(stack: list[str]) -> str:
    for frame in reversed(stack):
        for name, needles in COMPONENTS:
            if any(needle in frame for needle in needles):
                return name
    return "other"


def summarise(collapsed: str) -> tuple[Counter[str], Counter[str], int]:
    """(samples per component, samples per innermost function, total) of py-spy's raw output."""
    components: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not stack_text or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack_text.split(";")
        # The first frames name the process and thread.
        stack = [f for f in frames if "(" in f and not f.startswith(("process ", "thread "))]
        if not stack:
            continue
        total += count
        components[component_of(stack)] += count
        functions[stack[-1]] += count
    return components, functions, total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--signals", type=int, default=None, help="per run (800,000)")
    parser.add_argument(
        "--agents", default=None, help="comma-separated agent counts (10000,1000000)"
    )
    parser.add_argument("--seconds", type=int, default=None, help="how long to sample")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        raise SystemExit("py-spy is not installed: pip install py-spy")
    signals = args.signals or (60_000 if args.quick else 800_000)
    seconds = args.seconds or (3 if args.quick else 8)
    agent_counts = [
        int(a) for a in (args.agents or ("300,3000" if args.quick else "10000,1000000")).split(",")
    ]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    result = Result(
        "profile",
        "Where the worker's time goes",
        parameters={
            "signals": signals,
            "agent_counts": agent_counts,
            "sampled_seconds": seconds,
            "sample_rate_hz": 250,
            "quick": args.quick,
        },
    )
    with provide_broker() as bootstrap:
        for agents in agent_counts:
            profile_run(bootstrap, result, py_spy, agents, max(signals, agents), seconds, args)
    result.print()
    result.write(args.out_dir)
    return 0


def profile_run(
    bootstrap: str,
    result: Result,
    py_spy: str,
    agents: int,
    signals: int,
    seconds: int,
    args: argparse.Namespace,
) -> None:
    tag = agent_count_tag(agents)
    stacks_path = args.out_dir / f"profile-stacks-{tag}.txt"

    def profiler(pid: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                *(py_spy, "record", "--pid", str(pid), "--rate", "250"),
                *("--duration", str(seconds), "--format", "raw"),
                *("--output", str(stacks_path), "--nonblocking"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    with tempfile.TemporaryDirectory() as tmp:
        backlog = make_signals(agents, signals)
        prefix, _ = asyncio.run(prepare_backlog(bootstrap, backlog))
        run = worker_rate(bootstrap, prefix, len(backlog), Path(tmp), while_running=profiler)
        del backlog

    components, functions, total = summarise(stacks_path.read_text())
    if total == 0:
        raise SystemExit(f"py-spy recorded no samples in {stacks_path}")
    over = f"{signals:,} signals over {agents:,} agents"
    result.add(
        f"worker_signals_per_s_{tag}",
        f"worker rate while profiled ({over})",
        run.signals_per_s,
        "signals/s",
    )
    result.add(f"samples_{tag}", f"samples taken ({over})", total, "samples")
    for name, count in components.most_common():
        result.add(
            f"share_{tag}_{name}", f"{name} ({agents:,} agents)", round(100 * count / total, 1), "%"
        )
    result.series[f"share of samples by component, {agents:,} agents"] = Series(
        "component",
        "% of samples",
        [(name, round(100 * count / total, 1)) for name, count in components.most_common()],
        kind="bar",
    )
    for function, count in functions.most_common(10):
        result.notes.append(f"{agents:,} agents: {100 * count / total:4.1f}% in {function}")


if __name__ == "__main__":
    sys.exit(main())
