"""Running the command line as users do: a subprocess, configured by environment."""

from __future__ import annotations

import os
import subprocess
import sys

from .broker import REPO_ROOT


def run_cli(
    env: dict[str, str], *args: str, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams", *args],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
