"""The soak's maximum load, measured as the soak runs: the same worker, agents and full states,
sent more signals than it can apply, for a few minutes. Its rate of applying them over the second
half (once its caches and the backlog are what overload makes them) is the sustained maximum the
soak's percentage is taken of.

Closing is part of it: every agent active in a window is closed once per window, and window
closing and signals share the worker's time. How the closing backlog moved over the same half is
reported beside the rate, because a rate reached by leaving closes behind is no sustained one.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

from streams.kafka.topics import TopicNames
from tests.benchmarks import state
from tests.benchmarks.latency import BenchmarkFailure, running_worker, signals_applied
from tests.benchmarks.soakfigures import Population
from tests.benchmarks.soakfill import fill_resident
from tests.benchmarks.soakload import load_in_own_process
from tests.support.kafka_io import unique_name
from tests.support.worker import WorkerProcess

OVERLOAD_RATE = 12_000.0
OVERLOAD_MINUTES = 4.0
START_MARGIN_S = 8.0


@dataclass(frozen=True, slots=True)
class MaxRun:
    rate: float  # signals applied per second over the second half
    overload_rate: float
    minutes: float
    cpu_share: float | None
    close_pending_start: float | None
    close_pending_end: float | None
    lag_start: float | None
    lag_end: float | None
    filled: int

    @property
    def saturated(self) -> bool:
        """Signals were left unread over the measured half: the rate is the worker's, not the
        load's."""
        return (self.lag_end or 0) > (self.lag_start or 0)

    def facts(self) -> dict[str, object]:
        return {
            "max_rate_signals_per_s": self.rate,
            "max_overload_rate": self.overload_rate,
            "max_overload_minutes": self.minutes,
            "max_worker_cpu_share": self.cpu_share,
            "max_close_pending_start": self.close_pending_start,
            "max_close_pending_end": self.close_pending_end,
            "max_lag_start": self.lag_start,
            "max_lag_end": self.lag_end,
            "max_saturated": self.saturated,
        }


@dataclass(frozen=True, slots=True)
class _Reading:
    at: float
    applied: float
    cpu_s: float | None
    close_pending: float | None
    lag: float | None


def _read(worker: WorkerProcess) -> _Reading:
    state.require_running(worker, "under overload")
    metrics = state.scrape(worker)
    return _Reading(
        time.perf_counter(),
        signals_applied(worker.env["TRUST_WEB_PORT"]),
        state.cpu_seconds(state.pid_of(worker)),
        metrics.get("trust_windows_close_pending"),
        metrics.get("trust_consumer_lag"),
    )


async def measure_max(
    bootstrap: str, workdir: Path, args: argparse.Namespace, settings: dict[str, str]
) -> MaxRun:
    """Overload one worker on fresh topics for ``args.max_minutes`` and measure what it applies."""
    run_id = unique_name("soakmax")
    duration = args.max_minutes * 60
    population = Population(run_id, args.agents, args.ttl_minutes * 60, duration)
    filled = 0

    async def fill(names: TopicNames) -> None:
        nonlocal filled
        if not args.fresh_states:
            filled = await fill_resident(bootstrap, names, population, args.seed)

    async with running_worker(
        bootstrap, f"{run_id}.", workdir, "max-worker", prepare=fill, **settings
    ) as worker:
        start_at = time.time() + START_MARGIN_S
        with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
            load = asyncio.get_running_loop().run_in_executor(
                pool,
                load_in_own_process,
                bootstrap,
                TopicNames(f"{run_id}.").signals,
                population,
                args.overload_rate,
                duration,
                args.seed,
                start_at,
            )
            await asyncio.sleep(max(0.0, start_at - time.time()) + duration / 2)
            first = await asyncio.to_thread(_read, worker)
            await asyncio.sleep(max(0.0, start_at + duration - time.time()))
            last = await asyncio.to_thread(_read, worker)
            await load
    seconds = last.at - first.at
    if seconds <= 0 or last.applied <= first.applied:
        raise BenchmarkFailure("the overloaded worker applied nothing in the measured half")
    cpu = (
        None
        if first.cpu_s is None or last.cpu_s is None
        else round((last.cpu_s - first.cpu_s) / seconds, 3)
    )
    return MaxRun(
        rate=(last.applied - first.applied) / seconds,
        overload_rate=args.overload_rate,
        minutes=args.max_minutes,
        cpu_share=cpu,
        close_pending_start=first.close_pending,
        close_pending_end=last.close_pending,
        lag_start=first.lag,
        lag_end=last.lag,
        filled=filled,
    )
