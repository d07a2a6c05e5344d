"""The benchmark report: built from result files alone, honest about targets, and repeatable."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import pytest

from tests.benchmarks import __main__ as runner
from tests.benchmarks import report
from tests.benchmarks.results import Figure, Result, Series, Target, percentile

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _throughput() -> Result:
    result = Result("throughput", "Sustained throughput", parameters={"signals": 500_000})
    result.add("worker", "one worker, durable", 41_234.56, "signals/s", Target(">=", 35_000))
    result.add("ratio", "worker vs raw consume", 0.2261, "ratio", Target(">=", 0.5))
    result.add("raw", "raw aiokafka consume", 182_345.2, "signals/s")
    result.series["signals per second over time"] = Series(
        "elapsed (s)", "signals/s", [(0, 40_100.0), (1, 41_800.0), (2, 41_300.0)]
    )
    result.notes.append("The worker keeps a durable changelog.")
    return result


def _latency() -> Result:
    result = Result("latency", "Revocation latency", parameters={"load": 30_000, "quick": True})
    result.add("p99", "revocation p99", 812.4, "ms", Target("<=", 500))
    result.add("p50", "revocation p50", 3.2, "ms", Target("<=", 100))
    samples = [float(v) for v in range(1, 1001)]
    result.series["revocation latency"] = Series(
        "latency (ms)", "fraction of revocations", report.cdf_points(samples, 50), "cdf"
    )
    result.series["lag by load"] = Series(
        "load", "lag (ms)", [("10k/s", 12.0), ("20k/s", 30.5), ("30k/s", 1_200.0)], "bar"
    )
    return result


def _profile() -> Result:
    result = Result("profile", "Where the worker's time goes")
    result.add("decode", "decoding", 41.5, "%")
    result.series["share of time"] = Series(
        "stage", "% of time", [("decode", 41.5), ("score", 30.0), ("commit", 28.5)], "bar"
    )
    return result


@pytest.fixture
def built(tmp_path: Path) -> tuple[Path, Path, str]:
    results = tmp_path / "benchmarks"
    for result in (_throughput(), _latency(), _profile()):
        result.write(results)
    page = tmp_path / "benchmarks.md"
    assert report.main(["--results", str(results), "--out", str(page)]) == 0
    return results, page, page.read_text()


def _summary_rows(text: str) -> list[list[str]]:
    section = text.split("## Targets", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[1:]]


def test_targets_table_gives_each_target_its_verdict(built: tuple[Path, Path, str]) -> None:
    _, _, text = built
    rows = _summary_rows(text)
    worker = ["one worker, durable", "≥ 35,000 signals/s", "41,235 signals/s", report.MET]
    assert ["Throughput", *worker] in rows
    ratio = ["worker vs raw consume", f"≥ 0.5{report.TIMES}", f"0.23{report.TIMES}"]
    assert ["Throughput", *ratio, report.MISSED] in rows
    assert ["Latency (quick run)", "revocation p99", "≤ 500 ms", "812 ms", report.MISSED] in rows
    assert ["Latency (quick run)", "revocation p50", "≤ 100 ms", "3.20 ms", report.MET] in rows
    assert "2 of 4 targets met." in text
    # Figures without a target are not in the summary; scenarios without any are named.
    assert not any(row[1] == "raw aiokafka consume" for row in rows)
    assert "Scenarios with no targets: Profile." in text


def test_missing_scenarios_are_listed_as_not_run(built: tuple[Path, Path, str]) -> None:
    _, _, text = built
    rows = _summary_rows(text)
    assert ["State", "—", "—", "—", report.NOT_RUN] in rows
    assert ["Scale-out", "—", "—", "—", report.NOT_RUN] in rows
    assert "## State\n\nNot run: there is no `state.json`" in text


def test_sections_follow_the_suite_order_with_figures_notes_and_plots(
    built: tuple[Path, Path, str],
) -> None:
    _, _, text = built
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    scenario_headings = headings[headings.index("## Targets") + 1 :]
    assert scenario_headings == [
        "## Where the time goes, and the targets missed",
        "## Throughput: Sustained throughput",
        "## Latency: Revocation latency",
        "## State",
        "## Scale-out",
        "## Profile: Where the worker's time goes",
        "## Security",
        "## API load",
        "## Soak",
        "## Fresh-DID flood",
    ]
    assert "| raw aiokafka consume | 182,345 signals/s | — | — |" in text
    assert "| decoding | 41.5% | — | — |" in text
    assert "| `signals` | 500,000 |" in text
    assert "- The worker keeps a durable changelog." in text
    assert "**Quick run:**" in text.split("## Latency", 1)[1].split("## State", 1)[0]
    assert "**Quick run:**" not in text.split("## Latency", 1)[0]
    assert (
        "![signals per second over time]"
        "(benchmarks/throughput-signals-per-second-over-time.png)" in text
    )
    assert "make bench" in text
    assert "python -m tests.benchmarks" in text


def test_every_series_becomes_a_png(built: tuple[Path, Path, str]) -> None:
    results, _, text = built
    expected = [
        "throughput-signals-per-second-over-time.png",
        "latency-revocation-latency.png",
        "latency-lag-by-load.png",
        "profile-share-of-time.png",
    ]
    for name in expected:
        assert (results / name).read_bytes().startswith(PNG_SIGNATURE), name
        assert f"(benchmarks/{name})" in text
    assert sorted(p.name for p in results.glob("*.png")) == sorted(expected)


def test_same_results_give_the_same_page_and_plots(built: tuple[Path, Path, str]) -> None:
    results, page, text = built
    plots = {p.name: p.read_bytes() for p in results.glob("*.png")}
    report.main(["--results", str(results), "--out", str(page)])
    assert page.read_text() == text
    assert {p.name: p.read_bytes() for p in results.glob("*.png")} == plots


def test_the_machine_is_shown_once_or_per_group_when_they_differ(
    built: tuple[Path, Path, str],
) -> None:
    results, page, text = built
    assert "| CPUs |" in text
    assert "different machines" not in text
    path = results / "profile.json"
    data = json.loads(path.read_text())
    data["machine"] = {"cpus": 64, "python": "3.12.1"}
    path.write_text(json.dumps(data))
    report.build(results, page)
    text = page.read_text()
    assert "The results came from different machines" in text
    assert "**Machine 2** (Profile):" in text
    assert "| CPUs | 64 |" in text


def test_the_verdict_follows_the_numbers_not_the_stored_flag(tmp_path: Path) -> None:
    results = tmp_path / "benchmarks"
    path = _throughput().write(results)
    data = json.loads(path.read_text())
    data["figures"][0]["value"] = 1_000.0  # below the 35,000 target; "met" still says true
    assert data["figures"][0]["met"] is True
    path.write_text(json.dumps(data))
    report.build(results, tmp_path / "benchmarks.md")
    text = (tmp_path / "benchmarks.md").read_text()
    worker = ["one worker, durable", "≥ 35,000 signals/s", "1,000 signals/s", report.MISSED]
    assert ["Throughput", *worker] in _summary_rows(text)


def test_no_results_at_all_still_makes_a_page(tmp_path: Path) -> None:
    page = tmp_path / "benchmarks.md"
    report.main(["--results", str(tmp_path / "absent"), "--out", str(page)])
    text = page.read_text()
    rows = _summary_rows(text)
    assert [row[0] for row in rows] == [
        "Throughput",
        "Latency",
        "State",
        "Scale-out",
        "Profile",
        "Security",
        "API load",
        "Soak",
        "Fresh-DID flood",
    ]
    assert all(row[-1] == report.NOT_RUN for row in rows)
    assert "No targets were measured." in text


def test_unreadable_files_and_bad_series_are_reported_not_fatal(tmp_path: Path) -> None:
    results = tmp_path / "benchmarks"
    results.mkdir()
    (results / "old.json").write_text(json.dumps({"signals": 3000}))
    (results / "broken.json").write_text("{")
    result = Result("scaleout", "Scale-out")
    result.series["empty"] = Series("workers", "signals/s", [])
    result.series["bad cdf"] = Series("ms", "fraction", [(1.0, 50.0)], "cdf")
    result.write(results)
    (results / "scaleout-dropped-series.png").write_bytes(PNG_SIGNATURE)
    page = tmp_path / "benchmarks.md"
    report.main(["--results", str(results), "--out", str(page)])
    text = page.read_text()
    assert '- `old.json`: not in the result shape (no "figures" list)' in text
    assert "- `broken.json`: not readable as JSON" in text
    assert "Series “empty” was not plotted: no points." in text
    assert "Series “bad cdf” was not plotted: cdf fraction 50.0 is outside [0, 1]." in text
    # A plot the results no longer describe is not left behind to be mistaken for current.
    assert not (results / "scaleout-dropped-series.png").exists()


def test_a_cdf_of_raw_samples_is_plotted(tmp_path: Path) -> None:
    results = tmp_path / "benchmarks"
    results.mkdir()
    data = _latency().as_json()
    data["series"]["revocation latency"]["points"] = [5.0, 1.0, 3.0, 2.0]
    (results / "latency.json").write_text(json.dumps(data))
    report.build(results, tmp_path / "benchmarks.md")
    assert (results / "latency-revocation-latency.png").read_bytes().startswith(PNG_SIGNATURE)


def test_other_scenarios_follow_the_suite_alphabetically(tmp_path: Path) -> None:
    results = tmp_path / "benchmarks"
    for name in ("zeta", "alpha"):
        Result(name, name.title()).write(results)
    _throughput().write(results)
    report.build(results, tmp_path / "b.md")
    text = (tmp_path / "b.md").read_text()
    order = [text.index(f"## {name}") for name in ("Throughput", "Profile", "Alpha", "Zeta")]
    assert order == sorted(order)


@pytest.mark.parametrize(
    ("value", "unit", "shown"),
    [
        (41_234.56, "signals/s", "41,235 signals/s"),
        (12.34, "agents/s", "12.3 agents/s"),
        (812.4, "ms", "812 ms"),
        (12.345, "ms", "12.3 ms"),
        (3.2, "ms", "3.20 ms"),
        (0.01234, "s", "0.0123 s"),
        (123_456_789, "bytes", "123,456,789 bytes (117.7 MiB)"),
        (512, "bytes", "512 bytes"),
        (0.2261, "ratio", f"0.23{report.TIMES}"),
        (41.5, "%", "41.5%"),
        (10_000, "agents", "10,000 agents"),
        (2.5, "", "2.50"),
        (math.nan, "ms", "n/a"),
    ],
)
def test_numbers_are_formatted_for_their_unit(value: float, unit: str, shown: str) -> None:
    assert report.format_value(value, unit) == shown


def test_targets_are_written_as_a_reader_states_them() -> None:
    assert report.format_target(Target(">=", 35_000), "signals/s") == "≥ 35,000 signals/s"
    assert report.format_target(Target("<=", 0.25), "s") == "≤ 0.25 s"
    assert report.format_target(Target("<=", 1_500.5), "ms") == "≤ 1,500.5 ms"


def test_cdf_points_are_nearest_rank_fractions_ending_at_the_maximum() -> None:
    samples = [float(v) for v in range(1000, 0, -1)]
    points = report.cdf_points(samples, max_points=10)
    assert len(points) == 10
    assert points[-1] == (1000.0, 1.0)
    assert points[0] == (100.0, 0.1)
    for value, fraction in points:
        assert percentile(samples, fraction * 100) == value
    assert report.cdf_points([3.0, 1.0]) == [(1.0, 0.5), (3.0, 1.0)]
    assert report.cdf_points([]) == []


def test_percentile_is_nearest_rank_on_unsorted_samples() -> None:
    samples = [7.0, 1.0, 10.0, 3.0, 5.0, 2.0, 9.0, 4.0, 8.0, 6.0]
    assert percentile(samples, 50) == 5.0
    assert percentile(samples, 90) == 9.0
    assert percentile(samples, 99) == 10.0
    assert percentile(samples, 100) == 10.0
    assert percentile(samples, 0) == 1.0
    assert percentile([4.2], 99) == 4.2
    with pytest.raises(ValueError):
        percentile([], 50)


def test_target_met_by_includes_the_bound() -> None:
    assert Target(">=", 35_000).met_by(35_000)
    assert Target(">=", 35_000).met_by(35_001)
    assert not Target(">=", 35_000).met_by(34_999.9)
    assert Target("<=", 500).met_by(500)
    assert Target("<=", 500).met_by(12)
    assert not Target("<=", 500).met_by(500.1)
    assert Figure("p99", "p99", 600, "ms", Target("<=", 500)).met is False
    assert Figure("raw", "raw", 600, "ms").met is None


def _fake_suite(tmp_path: Path) -> tuple[str, Path]:
    """A package of stand-in scenarios: one writes its result, one crashes, one writes nothing."""
    package = tmp_path / "fakebench"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "throughput.py").write_text(
        "import sys\n"
        "from pathlib import Path\n"
        "from tests.benchmarks.results import Result, Target\n"
        "out = Path(sys.argv[sys.argv.index('--out-dir') + 1])\n"
        "r = Result('throughput', 'Stand-in', parameters={'quick': '--quick' in sys.argv})\n"
        "r.add('w', 'one worker', 40000, 'signals/s', Target('>=', 35000))\n"
        "r.write(out)\n"
    )
    (package / "latency.py").write_text("raise SystemExit(3)\n")
    (package / "state.py").write_text("")
    return "fakebench", package


def test_runner_keeps_going_past_failures_and_skips_absent_modules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    name, package_dir = _fake_suite(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    out_dir = tmp_path / "results" / "benchmarks"
    out_dir.mkdir(parents=True)
    outcomes = runner.run_all(
        runner._selected(None), quick=True, out_dir=out_dir, package=name, package_dir=package_dir
    )
    by_name = {o.scenario: o for o in outcomes}
    assert by_name["throughput"].status == "ok"
    assert by_name["latency"].status == "failed"
    assert by_name["latency"].detail == "exit status 3"
    assert by_name["state"].status == "failed"  # exited 0 without writing a result
    assert by_name["scaleout"].status == "skipped"
    assert by_name["report"].status == "ok"
    assert runner.summarize(outcomes) == 1
    assert "failed: latency, state" in capsys.readouterr().err
    text = (tmp_path / "results" / "benchmarks.md").read_text()
    assert "| Throughput (quick run) | one worker | ≥ 35,000 signals/s |" in text


def test_runner_only_keeps_the_suite_order_and_rejects_unknown_names() -> None:
    assert runner._selected("latency, throughput") == ["throughput", "latency"]
    # The long scenarios run only when named, positionally or with --only.
    assert runner._selected(None) == ["throughput", "latency", "state", "scaleout", "profile"]
    assert runner._selected(None, ["soak"]) == ["soak"]
    assert runner._selected("flood", ["soak", "throughput"]) == ["throughput", "soak", "flood"]
    with pytest.raises(ValueError, match="unknown scenario"):
        runner._selected(None, ["sock"])
    with pytest.raises(ValueError, match="unknown scenario"):
        runner._selected("throughput,nonsense")
    assert runner.page_for(Path("docs/benchmarks")) == Path("docs/benchmarks.md")


# -- the analysis of missed targets ---------------------------------------------------------


def _fig(key: str, value: float, unit: str, target: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "key": key,
        "label": key.replace("_", " "),
        "value": value,
        "unit": unit,
        "target": target,
    }


def test_analysis_explains_a_missed_target_with_the_runs_own_figures() -> None:
    from tests.benchmarks import analysis

    throughput = {
        "machine": {"cpus": 2},
        "figures": [
            _fig("raw_consume_signals_per_s_10k_agents", 500_000, "signals/s"),
            _fig("pure_scoring_signals_per_s_10k_agents", 125_000, "signals/s"),
            _fig("worker_vs_raw_consume_10k_agents", 0.1, "ratio", {"op": ">=", "value": 0.5}),
            _fig("worker_signals_per_s_10k_agents", 50_000, "signals/s", {"op": ">=", "value": 1}),
            _fig("mystery", 3, "s", {"op": "<=", "value": 1}),
        ],
    }
    lines = analysis.render({"throughput": throughput}, report.format_value)
    text = "\n".join(lines)
    ratio_line = next(line for line in lines if "worker vs raw consume" in line)
    assert (
        "2.0 µs" in ratio_line
        and "125,000 signals/s" in ratio_line
        and "0.25\N{MULTIPLICATION SIGN}" in ratio_line
    )
    assert "n/a" not in ratio_line
    # A met target gets no paragraph; a miss nobody explained says so.
    assert "worker signals per s" not in text
    assert "**mystery** (3" in text and "No analysis is written" in text
    assert "The profile scenario was not run." in text


# -- the soak and the fresh-DID flood -------------------------------------------------------


def _soak(last_mib: float) -> Result:
    """A soak result as the benchmark builds it, from a made-up half-hour run: RSS at 500 MiB in
    the middle third and ``last_mib`` in the last."""
    from tests.benchmarks.latency import Background
    from tests.benchmarks.soakfigures import Measured, Population, Probed, Sample, build_result

    duration = 1800.0
    samples = [
        Sample(
            at_s=float(at),
            rss_mib=400.0 if at < 600 else 500.0 if at < 1200 else last_mib,
            lag=float(at % 70),
            live_agents=80_000.0,
            expired=float(at * 10),
            cpu_s=at * 0.5,
            close_pending=float(at % 300),
        )
        for at in range(0, 1801, 10)
    ]
    measured = Measured(
        population=Population("run", 100_000, cohort_s=600.0, duration_s=duration),
        samples=samples,
        background=Background(sent=44_000_000, acked=44_000_000, seconds=duration),
        primed=96_000,
        probes=24_000,
        probed=Probed([(i * 0.075, 20.0 + i % 100) for i in range(24_000)], reinstated=24_000),
        drain_s=0.5,
        end_rss_mib=last_mib,
        peak_rss_mib=last_mib + 20,
        end_metrics={"trust_agents_expired_total": 41_000.0, "trust_live_agents": 83_000.0},
        facts={"topic_prefix": "soak-1."},
    )
    args = argparse.Namespace(
        quick=False, minutes=30.0, ttl_minutes=10.0, cache_agents=20_000, sample_seconds=10.0
    )
    rate = {"rate": 24_585.5, "rate_source": "50% of throughput.json worker_signals_per_s_10k"}
    return build_result(args, rate, measured)


def _flood() -> Result:
    from tests.benchmarks import flood
    from tests.benchmarks.state import DiskUsage

    args = argparse.Namespace(
        quick=False,
        dids=1_000_000,
        cache_agents=20_000,
        window_seconds=30.0,
        grace_seconds=5.0,
    )
    result = flood.Result(flood.SCENARIO, flood.TITLE, parameters={"dids": 1_000_000})
    points = [(float(agents), 80.0 + agents * 1_800 / 2**20) for agents in range(0, 10**6, 10**4)]
    flooded = flood.Flooded(
        prefix="flood-1.",
        produced=1_000_000,
        produce_s=8.0,
        signals_per_s=30_000.0,
        close_s=90.0,
        baseline_mib=80.0,
        applied_mib=80.0 + 1_800_000_000 / 2**20,
        closed_mib=80.0 + 2_000_000_000 / 2**20,
        peak_mib=2_100.0,
        points=points,
        disk=DiskUsage(databases=6, data_bytes=180_000_000, all_bytes=180_300_000),
        metrics={"trust_live_agents": 1_000_000.0},
    )
    flood.record(result, args, flooded)
    return result


def _build(tmp_path: Path, *results: Result) -> tuple[Path, str]:
    directory = tmp_path / "benchmarks"
    for result in results:
        result.write(directory)
    page = tmp_path / "benchmarks.md"
    report.build(directory, page)
    return directory, page.read_text()


def test_soak_and_flood_get_their_sections_plots_and_targets(tmp_path: Path) -> None:
    directory, text = _build(tmp_path, _throughput(), _soak(last_mib=510.0), _flood())
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings[-2:] == [
        "## Soak: Memory, lag and revocation latency under steady load, over time",
        "## Fresh-DID flood: Memory and disk per never-seen agent",
    ]
    flat = "mean RSS, last third against the middle third (flat: within 10%)"
    assert ["Soak", flat, f"≤ 1.1{report.TIMES}", f"1.02{report.TIMES}", report.MET] in (
        _summary_rows(text)
    )
    soak_section = text.split("## Soak", 1)[1].split("\n## ", 1)[0]
    assert "| revocation latency p99, whole run | 118 ms | — | — |" in soak_section
    assert "| consumer lag, largest sample | 60 records | — | — |" in soak_section
    assert "| agents expired by the TTL | 41,000 agents | — | — |" in soak_section
    flood_section = text.split("## Fresh-DID flood", 1)[1]
    assert "| state cache size (TRUST_STATE_CACHE_AGENTS) | 20,000 agents |" in flood_section
    assert "| RSS growth per agent, every window closed | 2,000 bytes (2.0 KiB) |" in flood_section
    assert "| RocksDB data files per agent | 180 bytes |" in flood_section
    # The marginal cost is the slope of the RSS samples past twice the cache: 1,800 bytes.
    assert "| RSS growth per agent past 2x the cache (slope while applying) | 1,800 bytes" in (
        flood_section
    )
    plots = {
        "soak-worker-rss-over-time.png",
        "soak-consumer-lag-over-time.png",
        "soak-revocation-latency-over-time-p99-per-interval.png",
        "soak-live-agents-over-time.png",
        "flood-worker-rss-by-agents-applied.png",
    }
    for name in plots:
        assert (directory / name).read_bytes().startswith(PNG_SIGNATURE), name
        assert f"(benchmarks/{name})" in text
    # The reading of the memory scenarios, every number filled from the results.
    memory = text.split("Memory over time:", 1)[1].split("\n\n", 2)[1]
    assert "Soak (30 min at 24,586 signals/s, idle-agent TTL 10 min)" in memory
    assert "500 MiB in the middle third of the run and 510 MiB in the last" in memory
    assert "agents expired by the TTL: 41,000 agents" in memory
    assert "each costs 2,000 bytes (2.0 KiB) of RSS" in memory
    assert "n/a" not in memory
    # A met flatness needs no explanation.
    assert "Memory kept growing" not in text


def test_a_soak_that_grows_is_explained_with_its_own_figures(tmp_path: Path) -> None:
    _, text = _build(tmp_path, _soak(last_mib=600.0), _flood())
    flat = "mean RSS, last third against the middle third (flat: within 10%)"
    assert ["Soak", flat, f"≤ 1.1{report.TIMES}", f"1.20{report.TIMES}", report.MISSED] in (
        _summary_rows(text)
    )
    explanation = next(line for line in text.splitlines() if line.startswith(f"- **{flat}**"))
    assert "from 500 MiB in the middle third to 600 MiB in the last" in explanation
    assert "with 41,000 agents expired by the TTL" in explanation
    assert "closing backlog (peak 290 agents)" in explanation
    assert "the worker's CPU (0.500 cores)" in explanation
    assert "n/a" not in explanation


def test_long_scenarios_not_run_say_how_to_run_them(built: tuple[Path, Path, str]) -> None:
    _, _, text = built
    assert "Not run: there is no `soak.json` in `benchmarks/`. It runs only when named: " in text
    assert "`python -m tests.benchmarks soak`" in text
    assert "`python -m tests.benchmarks security apiload soak flood` runs them" in text
    # Absent from the memory reading too: nothing is said about runs that did not happen.
    assert "Memory over time:" not in text


# -- the latency benchmark's CPU figures and backlog note ---------------------------------------


def _level(percent: int, worst_ms: float, worker_cpu: float) -> Any:
    from tests.benchmarks.latency import Background, LevelResult

    return LevelResult(
        percent=percent,
        target_rate=1000.0,
        background=Background(sent=1000, acked=1000, seconds=1.0),
        latencies_ms=[10.0, 20.0, worst_ms],
        window_phases_s=[1.0, 2.0, 3.0],
        probes=3,
        drain_s=0.0,
        worker_cpu=worker_cpu,
    )


def test_the_machine_busy_share_counts_every_core_and_leaves_out_idle_time() -> None:
    from tests.benchmarks.latency import busy_share, machine_cpu_times

    # 300 ticks passed on the machine, 120 of them busy.
    assert busy_share((1_000, 5_000), (1_120, 5_300)) == 0.4
    assert busy_share((7, 9), (7, 9)) == 0.0  # no time passed: nothing to divide by
    busy, total = machine_cpu_times()  # this machine, read from /proc/stat
    assert 0 <= busy <= total


def test_seconds_long_revocations_are_explained_only_when_a_run_had_them() -> None:
    from tests.benchmarks.latency import backlog_notes

    assert backlog_notes([_level(10, 90.0, 0.4), _level(50, 1_900.0, 0.86)]) == []
    (note,) = backlog_notes([_level(10, 90.0, 0.4), _level(50, 14_822.0, 0.86)])
    assert "at 50% load the slowest took 14.8 s, with the worker at 86% of a core" in note
    assert "10% load" not in note
