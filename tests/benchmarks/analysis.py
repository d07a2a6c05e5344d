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
        "near its ceiling: the worker used {worker_cpu_pct_50pct} of a core at this load "
        "({worker_cpu_pct_10pct} at 10%). Half the rate taken as 100% is a worker draining "
        "signals produced beforehand, 50 per agent, so its states stay small; live, each "
        "background agent has had well over a hundred signals by the end of this level, and a "
        "grown state costs more to apply and to encode at every checkpoint. Signals come "
        "through a reader of the worker's own (streams/kafka/signalreader.py): a fetch always "
        "in flight, and a record handed to the feed one step of the loop after its response "
        "arrives. aiokafka's consumer took several steps (its connection, fetch task, fetcher "
        "and the caller's waiter, and its next fetch only once the records fetched were taken),"
        " each waiting for one turn of every task ready then: measured per probe in an "
        "instrumented copy, from the record's timestamp until the feed took it, p99 65-90 ms "
        "against 10 ms for the plain consumer; in the six slowest probes of one run, 10-14 "
        "turns of a millisecond or more ran in between. In alternated runs the reader brought "
        "the p99 from 110-130 ms to 47-80 ms (three pairs). It also drains a backlog faster, so"
        " the rate taken as 100% rose with it ({max_rate_signals_per_s}, against 45,207 "
        "signals/s before), and this level asks more of the worker ({background_rate_50pct}): "
        "at the earlier 22,604 signals/s, the official benchmark measured 61.3 ms at p99 with "
        "the reader (the worker at 72% of a core). What is left waits behind the turns that "
        "hold the loop when a record arrives and at the steps after it (applied ahead, its "
        "state confirmed, the revocation sent): checkpoints (10,000 states every 5 s, 1-2 s "
        "each, a quarter of the time; median 43-48 ms inside against 10-13 ms outside, with "
        "aiokafka's consumer) and the seconds after a window's end plus grace, when every "
        "active agent's window closes in 20 ms turns. Tried and not kept, in alternated runs "
        "with aiokafka's consumer (p99 unless said): closing turns of 5 ms beside live signals "
        "(median while windows closed 12-57 ms against 68-82, but closing fell behind: at 8,000"
        " signals/s over 100,000 agents it closed 1,200 agents a second against 2,200, where "
        "neither kept up); with those, checkpoint slices of 25 states (77-114 ms against 77-87 "
        "for 100) and a 2 ms pause after each checkpoint slice and closing turn (47-94 ms "
        "against 92); a 1 ms pause after each signal turn as well (78-165 ms against 47-114, "
        "with a backlog left when the load stopped); uvloop in place of asyncio's loop (59-140 "
        "ms against 89-115); earlier, the cycle collector off, letting the consumer's next "
        "fetch go before each turn, turns of 50 signals and checkpoint slices spread over half "
        "the flush interval. Signal turns apply what fits in about 3 ms "
        "(streams/processing/turns.py), and garbage collection is paced (streams/gcpacing.py: "
        "young collections of 2.4 ms on average, where CPython's own had grown to single pauses"
        " of 100-220 ms). This run's slowest took {revocation_max_ms_50pct} (p50 "
        "{revocation_p50_ms_50pct} against {revocation_p50_ms_10pct} at 10% load). What would "
        "close the rest is headroom: less work per signal (validation, scoring and state "
        "encoding compiled), or partitions spread over more worker processes, so that the loop "
        "is idle more often when a record arrives."
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
