"""Soak: one worker under steady load for half an hour with the idle-agent TTL on, sampled every
ten seconds for memory, consumer lag, revocation latency and live agents.

    python -m tests.benchmarks.soak [--minutes M] [--agents N] [--max-rate R | --rate R]
        [--load-percent P] [--ttl-minutes T] [--sample-seconds S] [--quick] [--out-dir DIR]

One real worker (a subprocess configured by environment, as it is deployed) on fresh topics of a
real broker (KAFKA_BOOTSTRAP_SERVERS, else the local one), with TRUST_AGENT_TTL_DAYS set to T
minutes (default: a third of the run). A process of its own sends ordinary signals at a steady
rate: P % (50) of the worker's sustained rate (the throughput benchmark's 10k-agent figure in
<out-dir>/throughput.json, or --max-rate), or --rate signals/s.

Who gets signals when (``soakfigures.Population``): half of the N agents (100,000) are resident
and get signals all run long; the other half is split into cohorts of one TTL each, active one
after the other and idle for good afterwards, so the TTL expires a cohort while the next ones are
loaded. From the end of the first third on, the live set (resident agents, the active cohort and
the idle one not yet expired) keeps one size: memory that still grows is not state.

Revocation latency is measured as the latency benchmark measures it, with its helpers: probe
agents primed ten seconds ahead, one critical signal every PROBE_INTERVAL_S, latency from just
before the signal is produced until its revocation arrives here.

Every S seconds (10): the worker's RSS (/proc/<pid>/status VmRSS) and CPU time, its consumer lag
(the ``trust_consumer_lag`` gauge summed), live agents (``trust_live_agents``), agents expired
(``trust_agents_expired``) and closes pending (``trust_windows_close_pending``: closing keeps up
while it stays small) when the worker exposes them. Figures: flatness (mean
RSS of the last third of the run against the middle third: within 10 % is flat), the largest lag,
and revocation latency over the whole run; series of RSS, lag, revocation p99 and live agents
over time. Writes <out-dir>/soak.json (see tests/benchmarks/results.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from streams.kafka.topics import TopicNames
from streams.messages import ReinstateCommand
from streams.settings import TTL_FLUSH_INTERVALS, Settings
from tests.benchmarks import state
from tests.benchmarks.latency import (
    GRACE_SECONDS,
    PRIMING_VALUE,
    PROBE_DIMENSION,
    PROBE_INTERVAL_S,
    REVOCATION_WAIT_S,
    WINDOW_SECONDS,
    Arrivals,
    Background,
    BenchmarkFailure,
    Probe,
    probe_scores,
    read_max_rate,
    running_worker,
    send_probes,
    signal_bytes,
    wait_until_applied,
)
from tests.benchmarks.results import RESULTS_DIR
from tests.benchmarks.soakfigures import (
    DRAIN_WAIT_S,
    EXPIRED_METRICS,
    LIVE_METRIC,
    MINUTES_PER_DAY,
    Measured,
    Population,
    Sample,
    build_result,
    classify,
)
from tests.benchmarks.soakfill import fill_resident
from tests.benchmarks.soakload import load_in_own_process
from tests.benchmarks.soakmax import FIRST_RATE, LAST_RATE, RATE_STEP, measure_max
from tests.support.broker import provide_broker
from tests.support.kafka_io import producer as make_producer
from tests.support.kafka_io import unique_name
from tests.support.worker import WorkerProcess

DEFAULT_MINUTES = 30.0
DEFAULT_AGENTS = 100_000
LOAD_PERCENT = 50.0
SAMPLE_S = 10.0
QUICK = {"minutes": 1.0, "agents": 5_000, "sample_seconds": 5.0}
#: The load process starts sending at an agreed wall-clock moment this far ahead, so both
#: processes count the run from the same instant whatever spawning the process costs.
START_MARGIN_S = 8.0
SOURCE = "soak-benchmark"
STATE_CACHE_AGENTS = int(Settings.model_fields["state_cache_agents"].default)


# -- probes ------------------------------------------------------------------------------------


async def prime(producer: AIOKafkaProducer, names: TopicNames, dids: Sequence[str]) -> int:
    """The latency benchmark's priming of probe agents: the lowest non-critical value on every
    dimension but the probe's, so that the probe's critical signal alone revokes. Returns the
    signals sent (all acknowledged)."""
    futures = []
    for did in dids:
        for d, topic in enumerate(names.signals):
            if d != PROBE_DIMENSION:
                value = signal_bytes(did, PRIMING_VALUE)
                futures.append(await producer.send(topic, value, key=did.encode()))
    await asyncio.gather(*futures)
    return len(futures)


async def reinstate_revoked(
    producer: AIOKafkaProducer, names: TopicNames, dids: Sequence[str], revocations: Arrivals
) -> list[str]:
    """Reinstate the probes among ``dids`` whose revocation has arrived, as an operator would;
    the rest are returned, to try again later. A revoked agent is never expired: without this,
    probes (thirteen new agents a second) would grow the live set the flatness compares."""
    waiting = []
    sends = []
    for did in dids:
        key = did.encode()
        if key not in revocations.first:
            waiting.append(did)
            continue
        command = ReinstateCommand(agent_did=did, requested_by=SOURCE, reason="probe measured")
        sends.append(
            await producer.send(names.commands, command.model_dump_json().encode(), key=key)
        )
    await asyncio.gather(*sends)
    return waiting


# -- sampling ----------------------------------------------------------------------------------


def take_sample(worker: WorkerProcess, at_s: float) -> Sample:
    state.require_running(worker, "under the soak's load")
    pid = state.pid_of(worker)
    rss, _ = state.memory_mib(pid)
    cpu = state.cpu_seconds(pid)
    try:
        metrics = state.scrape(worker)
    except OSError:
        return Sample(at_s, rss, None, None, None, cpu)
    expired = next((metrics[name] for name in EXPIRED_METRICS if name in metrics), None)
    return Sample(
        at_s,
        rss,
        metrics.get("trust_consumer_lag", 0.0),
        metrics.get(LIVE_METRIC),
        expired,
        cpu,
        metrics.get("trust_windows_close_pending"),
    )


@dataclass(slots=True)
class Sampler:
    """Samples at ``t0 + k * every_s`` for k = 0 .. count, on the clock, not after each other."""

    worker: WorkerProcess
    t0: float
    every_s: float
    count: int
    samples: list[Sample] = field(default_factory=list)

    async def run(self) -> None:
        for k in range(self.count + 1):
            delay = self.t0 + k * self.every_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            at = time.perf_counter() - self.t0
            self.samples.append(await asyncio.to_thread(take_sample, self.worker, at))


# -- the run -----------------------------------------------------------------------------------


def worker_settings(args: argparse.Namespace) -> dict[str, str]:
    settings = {
        "agent_ttl_days": f"{args.ttl_minutes / MINUTES_PER_DAY:.9g}",
        "state_cache_agents": str(args.cache_agents),
    }
    # A TTL must span a few state flush intervals (see Settings); a short smoke run's does not
    # span that many of the default's, so its worker flushes more often.
    most = args.ttl_minutes * 60 / TTL_FLUSH_INTERVALS
    if most < float(Settings.model_fields["state_flush_seconds"].default):
        settings["state_flush_seconds"] = f"{most:.9g}"
    return settings


async def soak(bootstrap: str, workdir: Path, args: argparse.Namespace, rate: float) -> Measured:
    run_id = unique_name("soak")
    prefix = f"{run_id}."
    names = TopicNames(prefix)
    duration = args.minutes * 60
    population = Population(run_id, args.agents, args.ttl_minutes * 60, duration)
    chunks = max(1, math.ceil(duration / args.sample_seconds))
    per_chunk = max(1, round(args.sample_seconds / PROBE_INTERVAL_S))
    probe_dids = [
        [f"did:mesh:{run_id}-probe-{c:04d}-{i:04d}" for i in range(per_chunk)]
        for c in range(chunks)
    ]
    probe_topic = names.signals[PROBE_DIMENSION]
    _, expected_total = probe_scores()
    facts: dict[str, Any] = {
        "topic_prefix": prefix,
        "revocation_topic": names.revocations,
        "probe_did_prefix": f"did:mesh:{run_id}-probe-",
        "probes_per_interval": per_chunk,
        "probe_total_score": expected_total,
    }
    filled = 0

    async def fill(topics: TopicNames) -> None:
        nonlocal filled
        if not args.fresh_states:
            filled = await fill_resident(bootstrap, topics, population, args.seed)

    async with running_worker(
        bootstrap, prefix, workdir, "soak-worker", prepare=fill, **worker_settings(args)
    ) as worker:
        facts["filled_agents"] = filled
        revocations = Arrivals(bootstrap, names.revocations, time.perf_counter)
        primer = make_producer(bootstrap)
        # Latency starts before produce, so the probes' producer must not linger.
        probe_producer = make_producer(bootstrap, linger_ms=0)
        await revocations.start()
        await primer.start()
        await probe_producer.start()
        try:
            primed = await prime(primer, names, probe_dids[0])
            await wait_until_applied(worker, primed, 120.0, "applying the first priming")
            start_at = time.time() + START_MARGIN_S
            pool = ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn"))
            with pool:
                load = asyncio.get_running_loop().run_in_executor(
                    pool,
                    load_in_own_process,
                    bootstrap,
                    names.signals,
                    population,
                    rate,
                    duration,
                    args.seed,
                    start_at,
                )
                await asyncio.sleep(max(0.0, start_at - time.time()))
                t0 = time.perf_counter()
                count = int(duration // args.sample_seconds + 1e-9)
                sampler = Sampler(worker, t0, args.sample_seconds, count)
                sampling = asyncio.create_task(sampler.run())
                probes: list[Probe] = []
                unreinstated: list[str] = []
                for c in range(chunks):
                    # Primed one interval ahead, so that the priming is applied before the probe.
                    priming = (
                        asyncio.create_task(prime(primer, names, probe_dids[c + 1]))
                        if c + 1 < chunks
                        else None
                    )
                    probes += await send_probes(
                        probe_producer, probe_topic, probe_dids[c], PROBE_INTERVAL_S
                    )
                    unreinstated += probe_dids[c]
                    unreinstated = await reinstate_revoked(primer, names, unreinstated, revocations)
                    if priming is not None:
                        primed += await priming
                    if sampling.done():
                        sampling.result()  # the worker died: raise what the sampler saw
                sent, acked, seconds = await load
            await probe_producer.flush()
            await sampling
            print(f"load done: {sent:,} signals in {seconds:.0f} s", flush=True)
            # From the end of the load: what was left of it, and how long it took to apply.
            drain_s: float | None = None
            with contextlib.suppress(BenchmarkFailure):
                drain_s = await wait_until_applied(
                    worker, primed + sent + len(probes), DRAIN_WAIT_S, "draining the load"
                )
            wait = WINDOW_SECONDS + GRACE_SECONDS + REVOCATION_WAIT_S
            await revocations.wait_for({p.did.encode() for p in probes}, wait)
            probed = classify(probes, revocations, probe_topic, expected_total, t0)
            end_rss, peak_rss = state.memory_mib(state.pid_of(worker))
            end_metrics = await asyncio.to_thread(state.scrape, worker)
        finally:
            await probe_producer.stop()
            await primer.stop()
            await revocations.stop()
    return Measured(
        population=population,
        samples=sampler.samples,
        background=Background(sent=sent, acked=acked, seconds=seconds),
        primed=primed,
        probes=len(probes),
        probed=probed,
        drain_s=drain_s,
        end_rss_mib=end_rss,
        peak_rss_mib=peak_rss,
        end_metrics=end_metrics,
        facts=facts,
    )


def _rate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, Any]:
    if args.rate is not None:
        return {"rate": args.rate, "rate_source": "--rate"}
    if args.find_max:
        return {"rate": math.nan, "rate_source": "measured first (--find-max)"}
    if args.max_rate is not None:
        max_rate, source = args.max_rate, "--max-rate"
    else:
        try:
            max_rate, key = read_max_rate(args.out_dir / "throughput.json")
        except BenchmarkFailure as exc:
            parser.error(str(exc))
        source = f"throughput.json {key}"
    return {
        "rate": max_rate * args.load_percent / 100,
        "rate_source": f"{args.load_percent:g}% of {source}",
        "max_rate_signals_per_s": max_rate,
        "load_percent": args.load_percent,
    }


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, dict[str, Any]]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--minutes", type=float, help=f"length of the load ({DEFAULT_MINUTES:g})")
    parser.add_argument("--agents", type=int, help=f"distinct agents ({DEFAULT_AGENTS:,})")
    parser.add_argument("--max-rate", type=float, help="signals/s taken as 100%% load")
    parser.add_argument("--load-percent", type=float, default=LOAD_PERCENT)
    parser.add_argument("--rate", type=float, help="steady signals/s, in place of a percentage")
    parser.add_argument("--basis", help="why this load: a sentence for the report's notes")
    parser.add_argument("--ttl-minutes", type=float, help="idle-agent TTL (a third of the run)")
    parser.add_argument("--sample-seconds", type=float, help=f"sampling interval ({SAMPLE_S:g})")
    parser.add_argument("--cache-agents", type=int, default=STATE_CACHE_AGENTS)
    parser.add_argument(
        "--find-max",
        action="store_true",
        help="measure the maximum first: a staircase of rates on the same settings (soakmax.py)",
    )
    parser.add_argument("--max-first-rate", type=float, default=FIRST_RATE)
    parser.add_argument("--max-rate-step", type=float, default=RATE_STEP)
    parser.add_argument("--max-last-rate", type=float, default=LAST_RATE)
    parser.add_argument(
        "--fresh-states",
        action="store_true",
        help="start every agent new instead of with a full state (soakfill.py)",
    )
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--quick", action="store_true", help="a one-minute run, 5,000 agents")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--work-dir", type=Path, help="keep the worker's state and log here")
    args = parser.parse_args(argv)
    chosen = QUICK if args.quick else {}
    if args.minutes is None:
        args.minutes = chosen.get("minutes", DEFAULT_MINUTES)
    if args.agents is None:
        args.agents = int(chosen.get("agents", DEFAULT_AGENTS))
    if args.sample_seconds is None:
        args.sample_seconds = chosen.get("sample_seconds", SAMPLE_S)
    if args.ttl_minutes is None:
        args.ttl_minutes = args.minutes / 3
    if min(args.minutes, args.sample_seconds, args.ttl_minutes, args.load_percent) <= 0:
        parser.error("--minutes, --sample-seconds, --ttl-minutes and --load-percent must be > 0")
    if args.minutes * 60 < 3 * args.sample_seconds:
        parser.error("the run must last at least three sampling intervals")
    # A probe agent must outlive the lead with which it is primed, or it expires unprobed.
    if args.ttl_minutes * 60 < 3 * args.sample_seconds:
        parser.error("--ttl-minutes must be at least three sampling intervals")
    if args.agents < 4 * math.ceil(args.minutes / args.ttl_minutes):
        parser.error("too few --agents for the cohorts")
    if args.find_max and (args.rate is not None or args.max_rate is not None):
        parser.error("--find-max measures the maximum: give it without --rate or --max-rate")
    rate_facts = _rate(args, parser)
    if not rate_facts["rate"] > 0 and not args.find_max:
        parser.error("the rate must be positive")
    return args, rate_facts


async def find_max_then_soak(
    bootstrap: str, workdir: Path, args: argparse.Namespace, rate_facts: dict[str, Any]
) -> Measured:
    if args.find_max:
        print(
            f"measuring the maximum: from {args.max_first_rate:,.0f} signals/s up by "
            f"{args.max_rate_step:,.0f}/s a step, until a step is not kept up with",
            flush=True,
        )
        found = await measure_max(bootstrap, workdir, args, worker_settings(args))
        print(f"sustained maximum: {found.rate:,.0f} signals/s", flush=True)
        rate_facts.update(found.facts())
        rate_facts["rate"] = found.rate * args.load_percent / 100
        rate_facts["rate_source"] = (
            f"{args.load_percent:g}% of the maximum measured first ({found.rate:,.0f}/s)"
        )
        rate_facts["load_percent"] = args.load_percent
    print(
        f"soak: {rate_facts['rate']:,.0f} signals/s ({rate_facts['rate_source']}) for "
        f"{args.minutes:g} min, {args.agents:,} agents, TTL {args.ttl_minutes:.3g} min, "
        f"samples every {args.sample_seconds:g} s",
        flush=True,
    )
    return await soak(bootstrap, workdir, args, rate_facts["rate"])


def main(argv: list[str] | None = None) -> int:
    args, rate_facts = parse(argv)
    with (
        provide_broker() as bootstrap,
        state.work_directory(args.work_dir, "bench-soak-") as workdir,
    ):
        measured = asyncio.run(find_max_then_soak(bootstrap, workdir, args, rate_facts))
    result = build_result(args, rate_facts, measured)
    result.print()
    print(f"written to {result.write(args.out_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
