"""The one shape every benchmark writes, so one report can be built from all of them.

A result file is JSON::

    {
      "scenario": "throughput",            # the file's stem: docs/benchmarks/<scenario>.json
      "title": "Sustained throughput",
      "finished_at": "2026-11-24T09:00:00Z",
      "machine": {...},                    # machine_facts()
      "parameters": {...},                 # what the run was asked to do
      "figures": [Figure, ...],            # every number the report prints
      "series": {name: Series, ...},       # what the report plots
      "notes": ["...", ...]                # what a reader needs to interpret the figures
    }

A figure with a target says whether the target was met; the report lists every target.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

RESULTS_DIR = Path("docs/benchmarks")

Comparison = Literal[">=", "<="]


@dataclass(frozen=True, slots=True)
class Target:
    op: Comparison
    value: float

    def met_by(self, measured: float) -> bool:
        return measured >= self.value if self.op == ">=" else measured <= self.value


@dataclass(slots=True)
class Figure:
    key: str  # stable identifier, e.g. "worker_signals_per_s"
    label: str  # what a reader sees, e.g. "one worker, durable"
    value: float
    unit: str  # "signals/s", "ms", "bytes", "ratio", "s", "agents/s", ...
    target: Target | None = None
    #: Whether ``value`` meets ``target`` (None when there is no target).
    met: bool | None = None

    def __post_init__(self) -> None:
        if self.target is not None:
            self.met = self.target.met_by(self.value)


@dataclass(slots=True)
class Series:
    """Points to plot: one line (or one set of bars when ``kind`` is "bar")."""

    x_label: str
    y_label: str
    points: list[tuple[float | str, float]]
    kind: Literal["line", "bar", "cdf"] = "line"


@dataclass(slots=True)
class Result:
    scenario: str
    title: str
    parameters: dict[str, Any] = field(default_factory=dict)
    figures: list[Figure] = field(default_factory=list)
    series: dict[str, Series] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(
        self,
        key: str,
        label: str,
        value: float,
        unit: str,
        target: Target | None = None,
    ) -> Figure:
        figure = Figure(key, label, value, unit, target)
        self.figures.append(figure)
        return figure

    def figure(self, key: str) -> Figure:
        for figure in self.figures:
            if figure.key == key:
                return figure
        raise KeyError(key)

    def as_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "title": self.title,
            "finished_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "machine": machine_facts(),
            "parameters": self.parameters,
            "figures": [asdict(f) for f in self.figures],
            "series": {name: asdict(s) for name, s in self.series.items()},
            "notes": self.notes,
        }

    def print(self) -> None:
        print(f"== {self.title}")
        for f in self.figures:
            verdict = ""
            if f.target is not None:
                outcome = "met" if f.met else "MISSED"
                verdict = f"  target {f.target.op} {f.target.value:g}: {outcome}"
            print(f"  {f.label:58} {f.value:>14,.3f} {f.unit}{verdict}")
        for note in self.notes:
            print(f"  note: {note}")

    def write(self, directory: Path = RESULTS_DIR) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.scenario}.json"
        path.write_text(json.dumps(self.as_json(), indent=2) + "\n")
        return path


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank: a value that was actually measured."""
    if not values:
        raise ValueError("no samples")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def machine_facts() -> dict[str, Any]:
    facts: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    facts["cpu_model"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    facts["memory_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
                    break
    except OSError:
        pass
    try:
        java = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=10)
        facts["java"] = (java.stderr or java.stdout).splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        pass
    return facts
