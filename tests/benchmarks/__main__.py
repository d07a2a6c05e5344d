"""Runs every benchmark scenario, then builds the report.

    python -m tests.benchmarks [SCENARIO ...] [--quick] [--only throughput,latency,...]
        [--out-dir DIR]

With no scenario named, every scenario but those of ``ON_REQUEST`` runs: the long ones (the
half-hour soak and the fresh-DID flood), and ``security`` (throughput over SASL_SSL beside
plaintext, on the secured local broker as well as the plain one); those run only when named:
``python -m tests.benchmarks security soak flood``. Scenarios run in a fixed order, throughput
first: latency and the soak read the load they apply from throughput's result. Each runs as its
own process, so one that crashes (or hangs the event loop, or leaks a worker) cannot take the
others down; the run goes on, and exits non-zero at the end naming the ones that failed. A
scenario whose module does not exist yet is skipped and said so. The report is rebuilt from
whatever results the directory holds, including ones from earlier runs of scenarios that failed
or were not selected this time; each section says when it finished.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.benchmarks.report import ON_REQUEST, ORDER
from tests.benchmarks.results import RESULTS_DIR

PACKAGE = "tests.benchmarks"
PACKAGE_DIR = Path(__file__).resolve().parent
# Scenario modules are run as ``python -m tests.benchmarks.<name>``: from the repository root.
ROOT = PACKAGE_DIR.parents[1]


@dataclass(slots=True)
class Outcome:
    scenario: str
    status: str  # "ok", "failed", "skipped"
    detail: str
    seconds: float = 0.0


def _elapsed(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def _selected(only: str | None, named: Sequence[str] = ()) -> list[str]:
    """The scenarios to run: those named (positionally or by --only), else all but the long."""
    wanted = {name.strip() for name in (only or "").split(",") if name.strip()}
    wanted |= {name.strip() for name in named if name.strip()}
    if not wanted:
        return [name for name in ORDER if name not in ON_REQUEST]
    unknown = sorted(wanted - set(ORDER))
    if unknown:
        raise ValueError(f"unknown scenario(s): {', '.join(unknown)}; known: {', '.join(ORDER)}")
    # The suite's order, not the order asked for: later scenarios read earlier results.
    return [name for name in ORDER if name in wanted]


def run_scenario(
    name: str,
    *,
    quick: bool,
    out_dir: Path,
    package: str = PACKAGE,
    package_dir: Path = PACKAGE_DIR,
) -> Outcome:
    if not (package_dir / f"{name}.py").is_file():
        return Outcome(name, "skipped", f"no module {package}.{name} yet")
    command = [sys.executable, "-m", f"{package}.{name}", "--out-dir", str(out_dir)]
    if quick:
        command.append("--quick")
    result_file = out_dir / f"{name}.json"
    before = result_file.stat().st_mtime_ns if result_file.exists() else None
    print(f"== {name}: {' '.join(command[1:])}", flush=True)
    started = time.monotonic()
    returncode = subprocess.run(command, cwd=ROOT, check=False).returncode
    seconds = time.monotonic() - started
    if returncode != 0:
        return Outcome(name, "failed", f"exit status {returncode}", seconds)
    after = result_file.stat().st_mtime_ns if result_file.exists() else None
    if after is None or after == before:
        # Exiting cleanly without a fresh result would let the report show an old one as new.
        return Outcome(name, "failed", f"exited 0 but did not write {result_file}", seconds)
    return Outcome(name, "ok", str(result_file), seconds)


def run_report(out_dir: Path, page: Path) -> Outcome:
    command = [sys.executable, "-m", f"{PACKAGE}.report", "--results", str(out_dir)]
    command += ["--out", str(page)]
    print(f"== report: {' '.join(command[1:])}", flush=True)
    started = time.monotonic()
    returncode = subprocess.run(command, cwd=ROOT, check=False).returncode
    seconds = time.monotonic() - started
    if returncode != 0:
        return Outcome("report", "failed", f"exit status {returncode}", seconds)
    return Outcome("report", "ok", str(page), seconds)


def page_for(out_dir: Path) -> Path:
    """docs/benchmarks -> docs/benchmarks.md: the page sits beside the folder its plots are in."""
    return out_dir.with_name(f"{out_dir.name}.md")


def run_all(
    scenarios: Sequence[str],
    *,
    quick: bool,
    out_dir: Path,
    package: str = PACKAGE,
    package_dir: Path = PACKAGE_DIR,
) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for name in scenarios:
        outcome = run_scenario(
            name, quick=quick, out_dir=out_dir, package=package, package_dir=package_dir
        )
        if outcome.status == "skipped":
            print(f"-- {name}: skipped, {outcome.detail}", flush=True)
        else:
            print(f"-- {name}: {outcome.status} in {_elapsed(outcome.seconds)}", flush=True)
        outcomes.append(outcome)
    outcomes.append(run_report(out_dir, page_for(out_dir)))
    return outcomes


def summarize(outcomes: Sequence[Outcome]) -> int:
    print("\n== benchmarks")
    for o in outcomes:
        took = "" if o.status == "skipped" else f" ({_elapsed(o.seconds)})"
        print(f"  {o.scenario:12} {o.status:8}{took}  {o.detail}")
    failed = [o.scenario for o in outcomes if o.status == "failed"]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        for o in outcomes:
            if o.status == "failed" and o.scenario != "report":
                print(
                    f"  the report shows {o.scenario}'s previous result, if any, not this run",
                    file=sys.stderr,
                )
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=f"python -m {PACKAGE}", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "scenarios",
        nargs="*",
        metavar="SCENARIO",
        help=f"scenarios to run (default: all but {', '.join(ON_REQUEST)}); of: {', '.join(ORDER)}",
    )
    parser.add_argument("--quick", action="store_true", help="small runs, for a smoke test")
    parser.add_argument("--only", help=f"comma-separated subset of: {','.join(ORDER)}")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR, help="where results go")
    args = parser.parse_args(argv)
    try:
        scenarios = _selected(args.only, args.scenarios)
    except ValueError as exc:
        parser.error(str(exc))
    # Absolute, because the scenarios run from the repository root, not from here.
    out_dir = args.out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        outcomes = run_all(scenarios, quick=args.quick, out_dir=out_dir)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return summarize(outcomes)


if __name__ == "__main__":
    sys.exit(main())
