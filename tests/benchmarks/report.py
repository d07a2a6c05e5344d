"""Builds docs/benchmarks.md and its plots from the benchmark result files.

    python -m tests.benchmarks.report [--results DIR] [--out FILE]

Reads every ``*.json`` in DIR (default docs/benchmarks) that has the shape of
``tests.benchmarks.results``, and writes FILE (default docs/benchmarks.md) and one PNG per series
beside the results, named ``<scenario>-<slug of the series name>.png``. Plots of a scenario that
no longer has that series are deleted, so the directory only holds what the page shows.

What the report does with a series, by ``kind``:

* ``"line"``: the points in the order given (x numeric, or strings for categories).
* ``"bar"``: one bar per point, x as the category label (strings or numbers), value on the bar.
* ``"cdf"``: each point is ``(value, fraction)``: the fraction of samples at or below ``value``,
  a number in [0, 1]; the report sorts by value and draws a step line. Benchmarks with many raw
  samples turn them into points with :func:`cdf_points`, which keeps the file small. A list of
  bare numbers (not pairs) is also accepted and taken as the raw samples themselves.

The title of a plot is the series name, so a series name should read as a short phrase
("revocation latency", "signals per second by worker count").

A result whose ``parameters`` has ``"quick": true`` is marked as a quick run wherever its
figures appear: those numbers come from a smoke-sized input and are not to be quoted.

The output depends only on the result files: no clock is read, and plots are written without
the plotting library's version in their metadata.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.style
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as PlotFigure
from matplotlib.ticker import FuncFormatter

from tests.benchmarks import analysis
from tests.benchmarks.results import RESULTS_DIR, Target

#: The scenarios the benchmark suite runs, in the order the page presents them.
ORDER = (
    "throughput",
    "latency",
    "state",
    "scaleout",
    "profile",
    "security",
    "apiload",
    "soak",
    "flood",
)
#: Scenarios run only when named, never by default: the long ones (a half-hour soak, a million
#: stored agents read through the API), and the SASL_SSL comparison, which needs a second broker
#: (the secured one).
ON_REQUEST = ("security", "apiload", "soak", "flood")
NAMES = {
    "throughput": "Throughput",
    "latency": "Latency",
    "state": "State",
    "scaleout": "Scale-out",
    "profile": "Profile",
    "security": "Security",
    "apiload": "API load",
    "soak": "Soak",
    "flood": "Fresh-DID flood",
}
DEFAULT_OUT = Path("docs/benchmarks.md")
MET = "met ✅"
MISSED = "missed ❌"
NOT_RUN = "not run"
# A ratio reads as "0.83 times" the figure it compares with, written with the times sign.
TIMES = "\N{MULTIPLICATION SIGN}"

# Machine facts in the order a reader looks for them; unknown keys follow in file order.
MACHINE_LABELS = {
    "cpu_model": "CPU",
    "cpus": "CPUs",
    "memory_gib": "Memory (GiB)",
    "platform": "Platform",
    "python": "Python",
    "java": "Java",
}

RATE_SUFFIX = "/s"
TIME_UNITS = {"ns", "µs", "us", "ms", "s", "min"}
BYTE_UNITS = {"bytes", "byte", "B"}


# ---------------------------------------------------------------------------------------------
# Numbers


def _significant(magnitude: float, digits: int = 3) -> int:
    """Decimals that show ``digits`` significant digits of a magnitude below 1."""
    return max(0, min(9, digits - 1 - math.floor(math.log10(magnitude))))


def _decimals(value: float, unit: str) -> int:
    magnitude = abs(value)
    if magnitude == 0:
        return 0
    if unit in BYTE_UNITS:
        return 0
    if unit.endswith(RATE_SUFFIX):
        if magnitude >= 100:
            return 0
        if magnitude >= 10:
            return 1
        return 2 if magnitude >= 1 else _significant(magnitude)
    if unit in TIME_UNITS:
        if magnitude >= 100:
            return 0
        if magnitude >= 10:
            return 1
        return 2 if magnitude >= 1 else _significant(magnitude)
    if unit == "ratio":
        if magnitude >= 10:
            return 1
        return 2 if magnitude >= 0.1 else _significant(magnitude)
    if unit == "%":
        return 1 if magnitude >= 0.1 else _significant(magnitude)
    # Counts (agents, signals, partitions, ...) are whole numbers; show them as such.
    if float(value).is_integer() or magnitude >= 1000:
        return 0
    if magnitude >= 100:
        return 1
    return 2 if magnitude >= 1 else _significant(magnitude)


def _human_bytes(value: float) -> str:
    size = abs(value)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        size /= 1024
        if size < 1024 or unit == "TiB":
            return f"{math.copysign(size, value):,.1f} {unit}"
    raise AssertionError("unreachable")


def _with_unit(number: str, value: float, unit: str) -> str:
    if not unit:
        return number
    if unit == "%":
        return f"{number}%"
    if unit == "ratio":
        return f"{number}{TIMES}"
    if unit in BYTE_UNITS and math.isfinite(value) and abs(value) >= 1024:
        return f"{number} {unit} ({_human_bytes(value)})"
    return f"{number} {unit}"


def format_number(value: float | None, unit: str = "") -> str:
    """A measured number as the page shows it: thousands separators, decimals fit for its unit."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return f"{value:,.{_decimals(value, unit)}f}"


def format_value(value: float | None, unit: str) -> str:
    """A measured number with its unit, e.g. ``41,234 signals/s`` or ``12.5 ms``."""
    number = format_number(value, unit)
    if number == "n/a":
        return number
    assert value is not None
    return _with_unit(number, value, unit)


def _exact(value: float) -> str:
    """A number someone chose (a target, a parameter): every digit they wrote, with separators."""
    if math.isfinite(value) and float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.10g}"


def format_target(target: Target, unit: str) -> str:
    """A target as a reader states it, e.g. ``≥ 35,000 signals/s``."""
    symbol = "≥" if target.op == ">=" else "≤"
    return f"{symbol} {_with_unit(_exact(target.value), target.value, unit)}"


def _axis_number(value: float, _position: object = None) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:g}"


# ---------------------------------------------------------------------------------------------
# Reading results


@dataclass(slots=True)
class Loaded:
    """One result file as read, with what the page needs already checked."""

    scenario: str
    path: Path
    title: str
    finished_at: str | None
    machine: dict[str, Any]
    parameters: dict[str, Any]
    figures: list[dict[str, Any]]
    series: dict[str, dict[str, Any]]
    notes: list[str]

    @property
    def quick(self) -> bool:
        return self.parameters.get("quick") is True


@dataclass(slots=True)
class Collection:
    results: dict[str, Loaded] = field(default_factory=dict)
    #: Files that were not read, with why, so the page can say so instead of hiding them.
    problems: list[str] = field(default_factory=list)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _read_one(path: Path) -> Loaded:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not readable as JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    figures = data.get("figures")
    if not isinstance(figures, list):
        raise ValueError('not in the result shape (no "figures" list)')
    for figure in figures:
        if not isinstance(figure, dict) or not {"label", "value", "unit"} <= figure.keys():
            raise ValueError("a figure lacks label, value or unit")
    scenario = data.get("scenario")
    series = data.get("series") or {}
    notes = data.get("notes") or []
    if not isinstance(series, dict) or not isinstance(notes, list):
        raise ValueError('"series" is not an object or "notes" is not a list')
    return Loaded(
        scenario=scenario if isinstance(scenario, str) and scenario else path.stem,
        path=path,
        title=str(data.get("title") or ""),
        finished_at=data.get("finished_at") if isinstance(data.get("finished_at"), str) else None,
        machine=data.get("machine") if isinstance(data.get("machine"), dict) else {},
        parameters=data.get("parameters") if isinstance(data.get("parameters"), dict) else {},
        figures=figures,
        series=series,
        notes=[str(note) for note in notes],
    )


def read_results(directory: Path) -> Collection:
    collection = Collection()
    if not directory.is_dir():
        return collection
    for path in sorted(directory.glob("*.json")):
        try:
            loaded = _read_one(path)
        except ValueError as exc:
            collection.problems.append(f"`{path.name}`: {exc}")
            continue
        if loaded.scenario in collection.results:
            first = collection.results[loaded.scenario].path.name
            collection.problems.append(
                f"`{path.name}`: scenario `{loaded.scenario}` already read from `{first}`"
            )
            continue
        collection.results[loaded.scenario] = loaded
    return collection


def ordered_scenarios(present: Iterable[str]) -> list[str]:
    """The fixed suite order, then any other scenario alphabetically."""
    others = sorted(set(present) - set(ORDER))
    return [*ORDER, *others]


def scenario_name(scenario: str) -> str:
    return NAMES.get(scenario, scenario.replace("_", " ").replace("-", " ").capitalize())


def target_of(figure: dict[str, Any]) -> Target | None:
    target = figure.get("target")
    if not isinstance(target, dict):
        return None
    op, value = target.get("op"), _number(target.get("value"))
    if op not in (">=", "<=") or value is None:
        return None
    return Target(op, value)


def verdict(figure: dict[str, Any]) -> bool | None:
    """Whether the figure meets its target, decided here from value and target.

    The stored ``met`` is not trusted: the page must agree with the numbers it prints.
    A value that is missing or not a number never meets a target.
    """
    target = target_of(figure)
    if target is None:
        return None
    value = _number(figure.get("value"))
    if value is None or math.isnan(value):
        return False
    return target.met_by(value)


# ---------------------------------------------------------------------------------------------
# Plots


def cdf_points(samples: Sequence[float], max_points: int = 200) -> list[tuple[float, float]]:
    """(value, fraction at or below it) for a "cdf" series, from raw samples.

    Keeps at most ``max_points`` points at evenly spaced ranks, always the largest sample, so a
    result file stays small however many samples were taken. The fractions are nearest-rank, as
    in ``results.percentile``.
    """
    if not samples:
        return []
    ordered = sorted(float(s) for s in samples)
    count = len(ordered)
    if count <= max_points:
        ranks = list(range(1, count + 1))
    else:
        step = count / max_points
        ranks = sorted({min(count, math.ceil(step * (i + 1))) for i in range(max_points)})
    return [(ordered[rank - 1], rank / count) for rank in ranks]


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "series"


def _plot_title(name: str) -> str:
    return name.replace("_", " ")


def _pairs(points: list[Any]) -> list[tuple[float | str, float]]:
    pairs: list[tuple[float | str, float]] = []
    for point in points:
        if not isinstance(point, list | tuple) or len(point) != 2:
            raise ValueError(f"point {point!r} is not an (x, y) pair")
        x, y = point
        y_number = _number(y)
        if y_number is None:
            raise ValueError(f"point {point!r} has a y that is not a number")
        x_number = _number(x)
        if x_number is None and not isinstance(x, str):
            raise ValueError(f"point {point!r} has an x that is neither a number nor a string")
        pairs.append((x_number if x_number is not None else x, y_number))
    return pairs


def _cdf(points: list[Any]) -> list[tuple[float, float]]:
    if all(_number(point) is not None for point in points):
        return cdf_points([float(point) for point in points], max_points=len(points))
    curve: list[tuple[float, float]] = []
    for x, y in _pairs(points):
        if isinstance(x, str):
            raise ValueError(f"cdf value {x!r} is not a number")
        if not 0 <= y <= 1:
            raise ValueError(f"cdf fraction {y!r} is outside [0, 1]")
        curve.append((x, y))
    return sorted(curve)


def _category(x: float | str) -> str:
    return x if isinstance(x, str) else _axis_number(x)


def _draw(name: str, series: dict[str, Any], path: Path) -> None:
    points = series.get("points")
    if not isinstance(points, list) or not points:
        raise ValueError("no points")
    kind = series.get("kind", "line")
    # The default style, not the reader's matplotlibrc, so the same JSON gives the same image.
    with matplotlib.style.context("default"):
        figure = PlotFigure(figsize=(7.5, 4.2), dpi=100, layout="constrained")
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        numeric_x = kind == "cdf"
        if kind == "line":
            pairs = _pairs(points)
            numeric_x = not any(isinstance(x, str) for x, _ in pairs)
            xs = [x if numeric_x else _category(x) for x, _ in pairs]
            ys = [y for _, y in pairs]
            axes.plot(xs, ys, marker="o" if len(pairs) <= 60 else None)
            # From zero when nothing is negative: a cropped axis makes small wobbles look large.
            if min(ys) >= 0:
                axes.set_ylim(bottom=0)
        elif kind == "bar":
            pairs = _pairs(points)
            labels = [_category(x) for x, _ in pairs]
            values = [y for _, y in pairs]
            bars = axes.bar(labels, values, color="tab:blue")
            axes.bar_label(bars, labels=[_axis_number(v) for v in values], fontsize=8)
            if len(labels) > 8 or max(len(label) for label in labels) > 10:
                for tick in axes.get_xticklabels():
                    tick.set_rotation(30)
                    tick.set_horizontalalignment("right")
        elif kind == "cdf":
            curve = _cdf(points)
            axes.step([x for x, _ in curve], [y for _, y in curve], where="post")
            axes.set_ylim(0, 1.02)
            # Guides where latency figures are usually read off: the median and the tail.
            for fraction, label in ((0.5, "p50"), (0.99, "p99")):
                axes.axhline(fraction, linestyle=":", linewidth=0.8, color="0.55")
                axes.annotate(
                    label,
                    (1, fraction),
                    xycoords=("axes fraction", "data"),
                    xytext=(3, 0),
                    textcoords="offset points",
                    va="center",
                    fontsize=8,
                    color="0.4",
                )
        else:
            raise ValueError(f'unknown kind "{kind}"')
        axes.set_title(_plot_title(name))
        axes.set_xlabel(str(series.get("x_label", "")))
        axes.set_ylabel(str(series.get("y_label", "")))
        axes.yaxis.set_major_formatter(FuncFormatter(_axis_number))
        if numeric_x:
            axes.xaxis.set_major_formatter(FuncFormatter(_axis_number))
        axes.grid(True, axis="y" if kind == "bar" else "both", alpha=0.3)
        path.parent.mkdir(parents=True, exist_ok=True)
        # No "Software" entry: the file must not change when only the library's version does.
        figure.savefig(path, format="png", metadata={"Software": None})


@dataclass(slots=True)
class Plot:
    series: str
    path: Path | None
    problem: str | None = None


def draw_plots(result: Loaded, directory: Path) -> list[Plot]:
    plots: list[Plot] = []
    used: set[str] = set()
    for name, series in result.series.items():
        slug = base = _slug(name)
        suffix = 2
        while slug in used:
            slug, suffix = f"{base}-{suffix}", suffix + 1
        used.add(slug)
        path = directory / f"{result.scenario}-{slug}.png"
        try:
            if not isinstance(series, dict):
                raise ValueError("not an object")
            _draw(name, series, path)
        except ValueError as exc:
            plots.append(Plot(name, None, str(exc)))
            continue
        plots.append(Plot(name, path))
    return plots


def remove_stale_plots(collection: Collection, directory: Path, written: set[Path]) -> None:
    """Delete plots of present scenarios that this run did not draw (a series renamed or gone)."""
    for scenario in collection.results:
        for path in directory.glob(f"{scenario}-*.png"):
            if path not in written:
                path.unlink()


# ---------------------------------------------------------------------------------------------
# Markdown


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]], align: str) -> list[str]:
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---:" if a == "r" else "---" for a in align) + "|")
    lines.extend("| " + " | ".join(_cell(c) for c in row) + " |" for row in rows)
    return lines


def _link(path: Path, page: Path) -> str:
    return Path(os.path.relpath(path, page.parent)).as_posix()


def _parameter(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int | float):
        return _exact(value)
    if isinstance(value, str):
        return value
    return f"`{json.dumps(value, sort_keys=True)}`"


def _verdict_text(met: bool | None) -> str:
    return "—" if met is None else MET if met else MISSED


def _summary(collection: Collection, order: list[str]) -> list[str]:
    rows: list[list[str]] = []
    untargeted: list[str] = []
    met_count = total = 0
    for scenario in order:
        result = collection.results.get(scenario)
        name = scenario_name(scenario)
        if result is None:
            rows.append([name, "—", "—", "—", NOT_RUN])
            continue
        if result.quick:
            name += " (quick run)"
        targeted = [f for f in result.figures if target_of(f) is not None]
        if not targeted:
            untargeted.append(scenario_name(scenario))
        for figure in targeted:
            target = target_of(figure)
            assert target is not None
            met = verdict(figure)
            total += 1
            met_count += bool(met)
            unit = str(figure["unit"])
            rows.append(
                [
                    name,
                    str(figure["label"]),
                    format_target(target, unit),
                    format_value(_number(figure.get("value")), unit),
                    _verdict_text(met),
                ]
            )
    lines = ["## Targets", ""]
    lines.append(f"{met_count} of {total} targets met." if total else "No targets were measured.")
    lines.append("")
    lines += _table(["Scenario", "Figure", "Target", "Measured", "Verdict"], rows, "llrrl")
    if untargeted:
        lines += ["", f"Scenarios with no targets: {', '.join(untargeted)}."]
    return lines


def _machine_rows(machine: dict[str, Any]) -> list[list[str]]:
    keys = [k for k in MACHINE_LABELS if k in machine]
    keys += [k for k in machine if k not in MACHINE_LABELS]
    return [[MACHINE_LABELS.get(k, k), _parameter(machine[k])] for k in keys]


def _machines(collection: Collection, order: list[str]) -> list[str]:
    lines = ["## Machine", ""]
    groups: list[tuple[dict[str, Any], list[str]]] = []
    for scenario in order:
        result = collection.results.get(scenario)
        if result is None:
            continue
        for machine, names in groups:
            if machine == result.machine:
                names.append(scenario_name(scenario))
                break
        else:
            groups.append((result.machine, [scenario_name(scenario)]))
    if not groups:
        return [*lines, "No results yet."]
    if len(groups) == 1:
        machine = groups[0][0]
        if not machine:
            return [*lines, "The results do not say which machine they ran on."]
        return lines + _table(["Fact", "Value"], _machine_rows(machine), "ll")
    lines.append(
        "The results came from different machines, so figures from different scenarios are not "
        "directly comparable."
    )
    for index, (machine, names) in enumerate(groups, start=1):
        lines += ["", f"**Machine {index}** ({', '.join(names)}):", ""]
        if machine:
            lines += _table(["Fact", "Value"], _machine_rows(machine), "ll")
        else:
            lines.append("Not recorded.")
    return lines


def _notes(notes: list[str]) -> list[str]:
    lines: list[str] = []
    for note in notes:
        first, *rest = note.strip().splitlines() or [""]
        lines.append(f"- {first}")
        lines.extend(f"  {line}" if line.strip() else "" for line in rest)
    return lines


def _section(
    scenario: str, result: Loaded | None, plots: list[Plot], page: Path, results_dir: Path
) -> list[str]:
    name = scenario_name(scenario)
    if result is None:
        missing = f"Not run: there is no `{scenario}.json` in `{_link(results_dir, page)}/`."
        if scenario in ON_REQUEST:
            missing += f" It runs only when named: `python -m tests.benchmarks {scenario}`."
        return [f"## {name}", "", missing]
    heading = name if result.title in ("", name) else f"{name}: {result.title}"
    lines = [f"## {heading}", ""]
    where = f"Result file [`{result.path.name}`]({_link(result.path, page)})"
    lines.append(f"{where}, finished {result.finished_at}." if result.finished_at else f"{where}.")
    if result.quick:
        lines += [
            "",
            "**Quick run:** these figures come from a smoke-sized input and are not "
            "representative; run without `--quick` for figures to quote.",
        ]
    if result.parameters:
        lines += ["", "### Parameters", ""]
        rows = [[f"`{k}`", _parameter(v)] for k, v in result.parameters.items()]
        lines += _table(["Parameter", "Value"], rows, "lr")
    lines += ["", "### Figures", ""]
    if result.figures:
        rows = []
        for figure in result.figures:
            unit = str(figure["unit"])
            target = target_of(figure)
            rows.append(
                [
                    str(figure["label"]),
                    format_value(_number(figure.get("value")), unit),
                    format_target(target, unit) if target else "—",
                    _verdict_text(verdict(figure)),
                ]
            )
        lines += _table(["Figure", "Value", "Target", "Verdict"], rows, "lrrl")
    else:
        lines.append("No figures were recorded.")
    if result.notes:
        lines += ["", "### Notes", "", *_notes(result.notes)]
    if plots:
        lines += ["", "### Plots"]
        for plot in plots:
            lines.append("")
            if plot.path is None:
                lines.append(f"Series “{plot.series}” was not plotted: {plot.problem}.")
            else:
                alt = _plot_title(plot.series).replace("[", "(").replace("]", ")")
                lines.append(f"![{alt}]({_link(plot.path, page)})")
    return lines


def render(collection: Collection, plots: dict[str, list[Plot]], page: Path, results: Path) -> str:
    order = ordered_scenarios(collection.results)
    lines = [
        "# Benchmarks",
        "",
        "Generated from the result files in "
        f"[`{_link(results, page)}/`]({_link(results, page)}/); do not edit by hand.",
        "",
        "To regenerate, run every scenario and rebuild this page with one command (it needs "
        "Kafka: `KAFKA_BOOTSTRAP_SERVERS`, or the local broker, which is started for you):",
        "",
        "```sh",
        "make bench",
        "# the same as: python -m tests.benchmarks",
        "```",
        "",
        "`python -m tests.benchmarks --quick` makes a small smoke run, "
        "`--only throughput,latency` runs a subset, and `python -m tests.benchmarks.report` "
        "rebuilds this page from the existing results without running anything.",
        "",
        "The soak (half an hour of steady load over 100,000 agents, with the idle-agent "
        "TTL on) and the fresh-DID flood take long, and the security scenario (throughput over "
        "SASL_SSL beside plaintext) needs the secured local broker "
        "(`deploy/local/kafka start --secure`, started for it), so `make bench` leaves them out: "
        f"`python -m tests.benchmarks {' '.join(ON_REQUEST)}` runs them and rebuilds this page.",
        "",
        *_machines(collection, order),
        "",
        *_summary(collection, order),
        "",
        *analysis.render(
            {
                name: {"figures": r.figures, "machine": r.machine, "parameters": r.parameters}
                for name, r in collection.results.items()
            },
            format_value,
        ),
    ]
    if collection.problems:
        lines += ["", "## Files not read", ""]
        lines += [f"- {problem}" for problem in collection.problems]
    for scenario in order:
        lines += [
            "",
            *_section(
                scenario, collection.results.get(scenario), plots.get(scenario, []), page, results
            ),
        ]
    return "\n".join(lines) + "\n"


def build(results_dir: Path, out: Path) -> Collection:
    """Writes the page and its plots; returns what was read."""
    collection = read_results(results_dir)
    plots = {
        scenario: draw_plots(result, results_dir) for scenario, result in collection.results.items()
    }
    written = {p.path for scenario_plots in plots.values() for p in scenario_plots if p.path}
    remove_stale_plots(collection, results_dir, written)
    text = render(collection, plots, out, results_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return collection


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.benchmarks.report", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="result files' folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the page to write")
    args = parser.parse_args(argv)
    collection = build(args.results, args.out)
    print(f"wrote {args.out} from {len(collection.results)} result file(s)")
    for problem in collection.problems:
        print(f"not read: {problem.replace('`', '')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
