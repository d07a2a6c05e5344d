"""The soak benchmark's pure part: who gets signals when, and the figures, series and notes
made of what was sampled (tests/benchmarks/soak.py does the sending and the sampling)."""

from __future__ import annotations

import argparse
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from tests.benchmarks.latency import (
    GRACE_SECONDS,
    PARTITIONS,
    PROBE_INTERVAL_S,
    WINDOW_SECONDS,
    Arrivals,
    Background,
    BenchmarkFailure,
    Probe,
    check_revocation,
)
from tests.benchmarks.results import Result, Series, Target, percentile

SCENARIO = "soak"
TITLE = "Memory, lag and revocation latency under steady load, over time"

#: Share of the agents that go idle (in cohorts) so that the TTL expires them.
TRANSIENT_SHARE = 0.5
#: Flat: the last third's mean RSS at most this many times the middle third's.
FLAT_WITHIN = 1.10
#: How long the load's leftovers may take to be applied before the run gives up waiting.
DRAIN_WAIT_S = 600.0
MINUTES_PER_DAY = 24 * 60

LIVE_METRIC = "trust_live_agents"
#: A counter is exposed with a _total suffix; either name is taken.
EXPIRED_METRICS = ("trust_agents_expired_total", "trust_agents_expired")


# -- who gets signals when -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Population:
    """Who gets signals when: agents ``[0, resident)`` all run long, then ``cohorts`` cohorts of
    ``cohort_size`` agents, cohort k during ``[k * cohort_s, (k + 1) * cohort_s)`` (the last one
    until the end) and never again."""

    run: str
    agents: int
    cohort_s: float
    duration_s: float
    transient_share: float = TRANSIENT_SHARE

    @property
    def cohorts(self) -> int:
        return max(1, math.ceil(self.duration_s / self.cohort_s - 1e-9))

    @property
    def cohort_size(self) -> int:
        return round(self.agents * self.transient_share / self.cohorts)

    @property
    def resident(self) -> int:
        return self.agents - self.cohort_size * self.cohorts

    def did(self, i: int) -> str:
        return f"did:mesh:{self.run}-{i:07d}"

    def cohort_at(self, elapsed_s: float) -> int:
        return min(self.cohorts - 1, max(0, int(elapsed_s // self.cohort_s)))

    def pick(self, rng: random.Random, elapsed_s: float) -> int:
        """An agent active at ``elapsed_s``, every active one equally likely."""
        j = rng.randrange(self.resident + self.cohort_size)
        if j < self.resident:
            return j
        return self.resident + self.cohort_at(elapsed_s) * self.cohort_size + j - self.resident

    def idle_past(self, end_s: float, ttl_s: float, hold_s: float = 0.0) -> int:
        """Agents of the cohorts whose last signal came more than ``ttl_s`` and ``hold_s`` (how
        long a window stays open after its last signal: an agent with an open window is kept)
        before ``end_s``: what the TTL should have expired by then (probes aside)."""
        ended = [(k + 1) * self.cohort_s for k in range(self.cohorts - 1)]
        wait = max(ttl_s, hold_s)
        return sum(self.cohort_size for idle_from in ended if end_s - idle_from > wait)


@dataclass(slots=True)
class Sample:
    at_s: float  # since the load started
    rss_mib: float
    lag: float | None  # None: /metrics did not answer in time
    live_agents: float | None
    expired: float | None
    #: CPU seconds the worker has used since it started (user and system).
    cpu_s: float | None = None
    #: Agents with a window due and not yet closed (``trust_windows_close_pending``).
    close_pending: float | None = None


def cpu_share(samples: Sequence[Sample], duration_s: float) -> float | None:
    """The worker's CPU use over the last third of the run, as a share of one core (its Python
    thread can use one core at most; RocksDB's threads are counted too)."""
    window = [s for s in samples if s.cpu_s is not None and s.at_s >= duration_s * 2 / 3]
    if len(window) < 2 or window[-1].at_s <= window[0].at_s:
        return None
    first, last = window[0], window[-1]
    assert first.cpu_s is not None and last.cpu_s is not None
    return (last.cpu_s - first.cpu_s) / (last.at_s - first.at_s)


# -- figures (pure) ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Flatness:
    middle_mib: float
    last_mib: float

    @property
    def ratio(self) -> float:
        return self.last_mib / self.middle_mib


def flatness(samples: Sequence[Sample], duration_s: float) -> Flatness:
    """Mean RSS of the samples in the last third of the run against those in the middle third
    (minutes 20-30 against 10-20 of a 30-minute run)."""
    third = duration_s / 3
    middle = [s.rss_mib for s in samples if third <= s.at_s < 2 * third]
    last = [s.rss_mib for s in samples if 2 * third <= s.at_s]
    if not middle or not last:
        raise BenchmarkFailure(
            f"too few samples to compare thirds of a {duration_s:.0f} s run: sample more often"
        )
    return Flatness(sum(middle) / len(middle), sum(last) / len(last))


def per_interval(
    latencies: Sequence[tuple[float, float]], every_s: float, q: float
) -> list[tuple[float | str, float]]:
    """(minute at the end of each ``every_s`` interval, q-th percentile of the latencies of the
    probes sent in it) from (seconds since the start, latency) pairs; empty intervals left out."""
    buckets: dict[int, list[float]] = {}
    for at_s, value in latencies:
        buckets.setdefault(int(at_s // every_s), []).append(value)
    return [
        (round((k + 1) * every_s / 60, 3), round(percentile(buckets[k], q), 3))
        for k in sorted(buckets)
    ]


def over_time(samples: Sequence[Sample], attribute: str) -> list[tuple[float | str, float]]:
    """(minutes since the start, value) for every sample that has the value."""
    points: list[tuple[float | str, float]] = []
    for s in samples:
        value = getattr(s, attribute)
        if value is not None:
            points.append((round(s.at_s / 60, 3), round(float(value), 1)))
    return points


@dataclass(slots=True)
class Probed:
    """What became of the probes, from the revocation topic."""

    #: (seconds since the start when sent, latency in ms) of each probe revoked by its signal.
    latencies: list[tuple[float, float]]
    #: Revoked, but not by their own signal: their priming was applied after it, so the
    #: revocation came at a window close.
    otherwise: int = 0
    unrevoked: int = 0
    #: Revocations of agents that were no probe.
    not_probes: int = 0
    #: Audit records of probes reinstated after their revocation.
    reinstated: int = 0


@dataclass(slots=True)
class Measured:
    population: Population
    samples: list[Sample]
    background: Background
    primed: int
    probes: int
    probed: Probed
    drain_s: float | None
    end_rss_mib: float
    peak_rss_mib: float
    end_metrics: dict[str, float]
    facts: dict[str, Any]


def classify(
    probes: Sequence[Probe], revocations: Arrivals, topic: str, expected_total: int, t0: float
) -> Probed:
    """Each probe's revocation checked and timed. Counted, not raised: after half an hour of
    load the figures are worth keeping whatever went wrong."""
    revoked: dict[bytes, dict[str, Any]] = {}
    reinstated = 0
    for _, key, value in revocations.records:
        event = orjson.loads(value)
        if event.get("type") == "reinstated":
            reinstated += 1
        else:
            revoked.setdefault(key, event)
    probed = Probed([], reinstated=reinstated)
    for probe in probes:
        key = probe.did.encode()
        event = revoked.pop(key, None)
        if event is None or probe.future.exception() is not None:
            probed.unrevoked += 1
            continue
        try:
            check_revocation(event, probe, topic, expected_total)
        except BenchmarkFailure:
            probed.otherwise += 1
            continue
        # The revocation is the first record of its agent: a reinstatement only follows it.
        latency_ms = (revocations.first[key] - probe.sent_at) * 1000
        probed.latencies.append((probe.sent_at - t0, latency_ms))
    probed.not_probes = len(revoked)
    return probed


# -- the result --------------------------------------------------------------------------------


def build_result(args: argparse.Namespace, rate_facts: dict[str, Any], m: Measured) -> Result:
    duration = args.minutes * 60
    population = m.population
    result = Result(SCENARIO, TITLE)
    result.parameters = {
        "quick": args.quick,
        "minutes": args.minutes,
        **rate_facts,
        "agents": population.agents,
        "resident_agents": population.resident,
        "cohorts": population.cohorts,
        "agents_per_cohort": population.cohort_size,
        "cohort_minutes": population.cohort_s / 60,
        "ttl_minutes": args.ttl_minutes,
        "agent_ttl_days": args.ttl_minutes / MINUTES_PER_DAY,
        "state_cache_agents": args.cache_agents,
        "sample_seconds": args.sample_seconds,
        "probe_interval_ms": PROBE_INTERVAL_S * 1000,
        "window_seconds": WINDOW_SECONDS,
        "grace_seconds": GRACE_SECONDS,
        "partitions": PARTITIONS,
        **m.facts,
    }
    if rate_facts.get("max_steps"):
        result.add(
            "soak_max_rate_signals_per_s",
            "maximum load: the highest rate one worker kept up with (measured first)",
            rate_facts["max_rate_signals_per_s"],
            "signals/s",
        )
    result.add("soak_rate_signals_per_s", "steady load asked", rate_facts["rate"], "signals/s")
    result.add(
        "soak_background_signals_per_s",
        "steady load sent",
        m.background.sent / m.background.seconds,
        "signals/s",
    )
    result.add("soak_signals_sent", "signals sent (load, priming, probes)", _sent(m), "signals")
    flat = flatness(m.samples, duration)
    result.add("soak_rss_middle_mib", "mean RSS, middle third of the run", flat.middle_mib, "MiB")
    result.add("soak_rss_last_mib", "mean RSS, last third of the run", flat.last_mib, "MiB")
    result.add(
        "soak_rss_growth",
        "mean RSS, last third against the middle third (flat: within 10%)",
        round(flat.ratio, 4),
        "ratio",
        Target("<=", FLAT_WITHIN),
    )
    result.add("soak_rss_max_mib", "RSS, largest sample", max(s.rss_mib for s in m.samples), "MiB")
    result.add("soak_rss_end_mib", "RSS after the load was drained", m.end_rss_mib, "MiB")
    result.add("soak_peak_rss_mib", "peak RSS (VmHWM)", m.peak_rss_mib, "MiB")
    lags = [s.lag for s in m.samples if s.lag is not None]
    if lags:
        result.add("soak_lag_max", "consumer lag, largest sample", max(lags), "records")
        result.add(
            "soak_lag_mean", "consumer lag, mean of the samples", sum(lags) / len(lags), "records"
        )
    pending = [s.close_pending for s in m.samples if s.close_pending is not None]
    if pending:
        result.add(
            "soak_close_pending_max",
            "agents with a window due and not yet closed, largest sample",
            max(pending),
            "agents",
        )
        result.add(
            "soak_close_pending_last",
            "agents with a window due and not yet closed, last sample",
            pending[-1],
            "agents",
        )
    share = cpu_share(m.samples, m.samples[-1].at_s if m.samples else 0.0)
    if share is not None:
        result.add(
            "soak_worker_cpu_share",
            "worker CPU over the last third of the run, share of one core",
            round(share, 3),
            "cores",
        )
    result.add("soak_probes", "revocation probes sent", m.probes, "probes")
    result.add("soak_revocation_samples", "revocations measured", len(m.probed.latencies), "probes")
    result.add(
        "soak_probes_reinstated",
        "probes reinstated after their revocation (audit records)",
        m.probed.reinstated,
        "probes",
    )
    values = [ms for _, ms in m.probed.latencies]
    if values:
        for q, name in ((50, "p50"), (99, "p99")):
            result.add(
                f"soak_revocation_{name}_ms",
                f"revocation latency {name}, whole run",
                percentile(values, q),
                "ms",
            )
        result.add("soak_revocation_max_ms", "revocation latency max", max(values), "ms")
    _record_agents(result, args, m)
    if m.drain_s is not None:
        result.add("soak_drain_s", "backlog left when the load stopped, drained in", m.drain_s, "s")
    _record_series(result, args, m)
    _add_notes(result, args, m, flat)
    return result


def _sent(m: Measured) -> int:
    return m.background.sent + m.primed + m.probes


def _record_agents(result: Result, args: argparse.Namespace, m: Measured) -> None:
    duration = args.minutes * 60
    ttl_s = args.ttl_minutes * 60
    # A window stays open for up to its size plus the grace after the agent's last signal.
    idle = m.population.idle_past(duration, ttl_s, WINDOW_SECONDS + GRACE_SECONDS)
    result.add(
        "soak_agents_idle_past_ttl",
        "cohort agents idle past the TTL and their last window at the end",
        idle,
        "agents",
    )
    live = [s.live_agents for s in m.samples if s.live_agents is not None]
    if live:
        result.add("soak_live_agents_max", "live agents, largest sample", max(live), "agents")
    if LIVE_METRIC in m.end_metrics:
        result.add(
            "soak_live_agents_end", "live agents at the end", m.end_metrics[LIVE_METRIC], "agents"
        )
    expired = next((m.end_metrics[n] for n in EXPIRED_METRICS if n in m.end_metrics), None)
    if expired is not None:
        result.add("soak_agents_expired", "agents expired by the TTL", expired, "agents")


def _record_series(result: Result, args: argparse.Namespace, m: Measured) -> None:
    minutes = "minutes since the load started"
    # Series names are the plots' titles in the report.
    result.series["worker RSS over time"] = Series(
        minutes, "RSS (MiB)", over_time(m.samples, "rss_mib")
    )
    result.series["consumer lag over time"] = Series(
        minutes, "records not yet processed", over_time(m.samples, "lag")
    )
    if m.probed.latencies:
        result.series["revocation latency over time, p99 per interval"] = Series(
            minutes,
            f"p99 of the probes sent in each {args.sample_seconds:g} s (ms)",
            per_interval(m.probed.latencies, args.sample_seconds, 99),
        )
    live = over_time(m.samples, "live_agents")
    if live:
        result.series["live agents over time"] = Series(minutes, "agents", live)


def _add_notes(result: Result, args: argparse.Namespace, m: Measured, flat: Flatness) -> None:
    p = m.population
    notes = result.notes
    notes.append(
        f"{p.agents:,} agents: {p.resident:,} resident, with signals all run long, and "
        f"{p.cohorts} cohorts of {p.cohort_size:,}, each active for {p.cohort_s / 60:.3g} min "
        "and idle for good afterwards, so that the TTL "
        f"({args.ttl_minutes:.3g} min, TRUST_AGENT_TTL_DAYS) expires one while the next are "
        "loaded. From the end of the first third, the live set keeps one size; the flatness "
        "compares the mean RSS of the last third of the run with the middle third's "
        f"({flat.middle_mib:,.0f} and {flat.last_mib:,.0f} MiB)."
    )
    notes.append(
        "Revocation latency as in the latency benchmark: a probe agent primed on the other "
        f"four dimensions {args.sample_seconds:g}-{2 * args.sample_seconds:g} s ahead, then one "
        f"critical signal every {PROBE_INTERVAL_S * 1000:g} ms, measured from just before it "
        "is produced until its revocation arrives here. Probes add "
        f"{m.probes:,} agents of their own. A revoked agent is never expired, so each probe "
        "is reinstated (a command, as an operator's) once its revocation has arrived, and "
        "then idles out under the TTL like any agent: otherwise the probes alone would grow "
        "the live set the flatness compares."
    )
    notes.append(
        f"Sampled every {args.sample_seconds:g} s: RSS from /proc/<pid>/status and CPU time from "
        "/proc/<pid>/stat, the trust_consumer_lag gauge summed over partitions (signals, ticks "
        f"and commands), {LIVE_METRIC}, trust_agents_expired and trust_windows_close_pending "
        "when the worker exposes them. Broker, worker, load process and this process share the "
        "machine."
    )
    filled = m.facts.get("filled_agents", 0)
    if filled:
        notes.append(
            f"The {filled:,} resident agents start as after days of service: each with a full "
            "state (100 values per dimension, 100 history entries, a published update), written "
            "to the run's state changelog before the worker started and restored by it. A "
            "state stops growing once full, so memory that still grows is not state filling "
            "up; the cohorts come new, as new agents do."
        )
    steps = result.parameters.get("max_steps")
    if steps:
        kept = [s for s in steps if s["kept_up"]]
        failed = [s for s in steps if not s["kept_up"]]
        described = "; ".join(
            f"{s['rate']:,.0f}/s: applied {s['applied_per_s']:,}/s at {s['cpu_share']} of a "
            f"core, lag {s['lag']:,.0f}, closes waiting {s['close_pending']:,.0f} of "
            f"{s['live_agents']:,.0f} live agents"
            for s in steps
        )
        notes.append(
            "Maximum load measured first, in the same run: the same worker settings, agents and "
            "full states on fresh topics, offered a staircase of rates, three windows a step, "
            "judged just before a window falls due (kept up: consumer lag under two seconds of "
            "load and fewer than 1% of live agents waiting for a close). Steps: "
            f"{described}. The maximum is the highest kept up with"
            + (f", {kept[-1]['rate']:,.0f}/s" if kept else "")
            + (
                f" ({failed[0]['rate']:,.0f}/s was not)"
                if failed
                else " (every step was kept up with: a lower bound on the maximum)"
            )
            + f"; the soak's load is {result.parameters.get('load_percent', 0):g}% of it."
        )
    if getattr(args, "basis", None):
        notes.append(f"Load chosen: {args.basis}")
    probed = m.probed
    if probed.otherwise or probed.unrevoked or probed.not_probes:
        notes.append(
            f"{probed.otherwise} probes were revoked but not by their own signal (their "
            "priming was applied after it, which happens when the worker lags more than the "
            f"priming lead: see the lag), {probed.unrevoked} were not revoked at all, and "
            f"{probed.not_probes} agents that were no probe were revoked."
        )
    if m.drain_s is None:
        notes.append(
            f"The worker had not applied every signal {DRAIN_WAIT_S:.0f} s after the load."
        )
    if not any(n in m.end_metrics for n in EXPIRED_METRICS):
        notes.append(
            "The worker exposes no trust_agents_expired counter: whether the TTL expired "
            "anyone is not measured here."
        )
    rate = m.background.sent / m.background.seconds
    if rate < 0.95 * result.figure("soak_rate_signals_per_s").value:
        notes.append(
            f"The load process reached {rate:,.0f} signals/s of the "
            f"{result.figure('soak_rate_signals_per_s').value:,.0f} asked."
        )
