"""The soak's maximum load, measured as the soak runs: the same worker settings, agents and full
states, offered a staircase of rates until a step is not kept up with. The highest rate kept up
with is the maximum the soak's percentage is taken of.

Kept up means both halves of the work: the signals (the consumer lag at the step's end is under
two seconds of its load) and the window closes (every agent active in a window is closed once per
window, all of them due together at the window's end plus grace; just before the next window is
due, fewer than 1 % of the live agents may still wait). Closes matter: at 100,000 agents they are
about half the work, and a worker left to read signals as fast as it can (an overloaded one) gets
them at the price of closing late, which would overstate what it sustains.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

from streams.kafka.topics import TopicNames
from tests.benchmarks import state
from tests.benchmarks.latency import (
    GRACE_SECONDS,
    WINDOW_SECONDS,
    BenchmarkFailure,
    running_worker,
    signals_applied,
)
from tests.benchmarks.soakfigures import Population
from tests.benchmarks.soakfill import fill_resident
from tests.benchmarks.soakload import load_in_own_process
from tests.support.kafka_io import unique_name
from tests.support.worker import WorkerProcess

FIRST_RATE = 1_000.0
RATE_STEP = 1_000.0
LAST_RATE = 20_000.0
#: Windows per step: the first lets the step's load settle, the last is judged.
STEP_WINDOWS = 3
START_MARGIN_S = 3.0
#: A step is kept up with when, just before a window falls due, fewer than this share of the
#: live agents still wait for a close ...
PENDING_SHARE = 0.01
#: ... and the signals not yet read are fewer than this many seconds of the step's load.
LAG_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class Step:
    rate: float
    applied_per_s: float
    cpu_share: float | None
    lag: float
    close_pending: float
    live_agents: float

    @property
    def kept_up(self) -> bool:
        return self.lag < LAG_SECONDS * self.rate and self.close_pending <= PENDING_SHARE * max(
            self.live_agents, 1.0
        )


@dataclass(slots=True)
class MaxRun:
    steps: list[Step] = field(default_factory=list)
    filled: int = 0

    @property
    def rate(self) -> float:
        kept = [s.rate for s in self.steps if s.kept_up]
        return max(kept) if kept else 0.0

    def facts(self) -> dict[str, object]:
        return {
            "max_rate_signals_per_s": self.rate,
            "max_method": "staircase",
            "max_steps": [
                {
                    "rate": s.rate,
                    "applied_per_s": round(s.applied_per_s),
                    "cpu_share": s.cpu_share,
                    "lag": s.lag,
                    "close_pending": s.close_pending,
                    "live_agents": s.live_agents,
                    "kept_up": s.kept_up,
                }
                for s in self.steps
            ],
        }


@dataclass(frozen=True, slots=True)
class _Reading:
    at: float
    applied: float
    cpu_s: float | None
    metrics: dict[str, float]


def _read(worker: WorkerProcess) -> _Reading:
    state.require_running(worker, "measuring the maximum")
    return _Reading(
        time.perf_counter(),
        signals_applied(worker.env["TRUST_WEB_PORT"]),
        state.cpu_seconds(state.pid_of(worker)),
        state.scrape(worker),
    )


def judging_moment(step_end: float) -> float:
    """The last moment before ``step_end`` that is one second before a window falls due (windows
    are aligned to the epoch and fall due GRACE_SECONDS after they end)."""
    due = math.floor((step_end - GRACE_SECONDS) / WINDOW_SECONDS) * WINDOW_SECONDS
    return due + GRACE_SECONDS - 1.0


async def measure_max(
    bootstrap: str, workdir: Path, args: argparse.Namespace, settings: dict[str, str]
) -> MaxRun:
    """Offer one worker (fresh topics, full resident states) a rising rate, step by step, until
    a step is not kept up with; every step's figures are returned."""
    run_id = unique_name("soakmax")
    names = TopicNames(f"{run_id}.")
    step_s = STEP_WINDOWS * WINDOW_SECONDS
    population = Population(run_id, args.agents, args.ttl_minutes * 60, step_s)
    found = MaxRun()

    async def fill(topics: TopicNames) -> None:
        if not args.fresh_states:
            found.filled = await fill_resident(bootstrap, topics, population, args.seed)

    async with running_worker(
        bootstrap, f"{run_id}.", workdir, "max-worker", prepare=fill, **settings
    ) as worker:
        loop = asyncio.get_running_loop()
        with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
            rate = args.max_first_rate
            while rate <= args.max_last_rate:
                start_at = time.time() + START_MARGIN_S
                load = loop.run_in_executor(
                    pool,
                    load_in_own_process,
                    bootstrap,
                    names.signals,
                    population,
                    rate,
                    step_s,
                    args.seed + len(found.steps),
                    start_at,
                )
                await asyncio.sleep(max(0.0, start_at - time.time()))
                first = await asyncio.to_thread(_read, worker)
                await asyncio.sleep(max(0.0, judging_moment(start_at + step_s) - time.time()))
                last = await asyncio.to_thread(_read, worker)
                await load
                step = _step(rate, first, last)
                found.steps.append(step)
                print(f"  step {step}: {'kept up' if step.kept_up else 'NOT kept up'}", flush=True)
                if not step.kept_up:
                    break
                rate += args.max_rate_step
    if not found.steps or not found.steps[0].kept_up:
        raise BenchmarkFailure(
            f"the worker did not keep up with the first step ({args.max_first_rate:,.0f}/s)"
        )
    return found


def _step(rate: float, first: _Reading, last: _Reading) -> Step:
    seconds = max(1e-9, last.at - first.at)
    cpu = (
        None
        if first.cpu_s is None or last.cpu_s is None
        else round((last.cpu_s - first.cpu_s) / seconds, 3)
    )
    return Step(
        rate=rate,
        applied_per_s=(last.applied - first.applied) / seconds,
        cpu_share=cpu,
        lag=last.metrics.get("trust_consumer_lag", math.inf),
        close_pending=last.metrics.get("trust_windows_close_pending", math.inf),
        live_agents=last.metrics.get("trust_live_agents", 0.0),
    )
