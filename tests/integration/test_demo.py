"""The demo, run as the README says, shows score updates and a revocation, and stops on Ctrl-C."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time

from tests.support.broker import REPO_ROOT


def test_demo_shows_scores_and_a_revocation_then_stops_cleanly_on_sigint(
    kafka_bootstrap: str,
) -> None:
    demo = subprocess.Popen(
        [sys.executable, "-m", "streams", "demo", "--window-seconds", "3", "--agents", "20"],
        cwd=REPO_ROOT,
        env={**os.environ, "TRUST_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert demo.stdout is not None and demo.stderr is not None
    seen: list[str] = []
    deadline = time.monotonic() + 90
    selector = selectors.DefaultSelector()
    selector.register(demo.stdout, selectors.EVENT_READ)
    try:
        while time.monotonic() < deadline and not (
            any(line.startswith("[score]") for line in seen)
            and any(line.startswith("[REVOKED]") for line in seen)
        ):
            if selector.select(timeout=1.0):
                line = demo.stdout.readline()
                if not line:
                    break
                seen.append(line.rstrip("\n"))
        scores = [line for line in seen if line.startswith("[score]")]
        revocations = [line for line in seen if line.startswith("[REVOKED]")]
        assert scores, f"no score update within 90 s; output: {seen[-20:]}"
        assert revocations, f"no revocation within 90 s; output: {seen[-20:]}"
        assert "(malicious)" in revocations[0] and "below threshold" in revocations[0]
    finally:
        demo.send_signal(signal.SIGINT)
        _, errors = demo.communicate(timeout=90)
    assert demo.returncode == 0, errors[-3000:]
    assert "Traceback" not in errors, errors[-3000:]
    assert "demo: stopped." in errors
