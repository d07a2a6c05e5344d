"""The worker as its users run it: ``python -m streams worker``, configured by environment only."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .broker import REPO_ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class WorkerProcess:
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    _log_offset: int = field(default=0)

    def start(self) -> WorkerProcess:
        self._log_file = self.log_path.open("ab")
        self._log_offset = self.log_path.stat().st_size
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streams", "worker"],
            cwd=REPO_ROOT,
            env={**os.environ, **self.env},
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        return self

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_since_start(self) -> str:
        with self.log_path.open("rb") as f:
            f.seek(self._log_offset)
            return f.read().decode(errors="replace")

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_for_log(self, text: str, timeout: float = 90.0) -> None:
        """Wait until ``text`` appears in the log of the current run."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log_since_start():
                return
            if not self.running():
                raise AssertionError(
                    f"worker exited ({self.returncode()}) before logging {text!r}:\n"
                    f"{self.log_since_start()[-4000:]}"
                )
            time.sleep(0.1)
        raise AssertionError(
            f"worker did not log {text!r} within {timeout:.0f} s:\n{self.log_since_start()[-4000:]}"
        )

    def wait_until_assigned(self, timeout: float = 90.0) -> None:
        self.wait_for_log("Assigned partitions", timeout)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.env['TRUST_WEB_PORT']}"

    def wait_until_ready(self, timeout: float = 90.0) -> None:
        """Until its /readyz answers 200 (partitions assigned, tables recovered, config read)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.base_url}/readyz", timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if not self.running():
                raise AssertionError(f"worker exited:\n{self.log_since_start()[-4000:]}")
            time.sleep(0.2)
        raise AssertionError(f"worker not ready within {timeout:.0f} s")

    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM, as an operator or an orchestrator stops it; returns the exit status."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self._close()

    def kill(self) -> None:
        """SIGKILL: no chance to flush, commit or clean up."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=30)
        self._close()

    def _close(self) -> None:
        if not self._log_file.closed:
            self._log_file.close()

    def ensure_stopped(self) -> None:
        if self.running():
            assert self.process is not None
            self.process.kill()
            self.process.wait(timeout=30)
        if hasattr(self, "_log_file"):
            self._close()


def worker_env(
    bootstrap: str,
    prefix: str,
    state_dir: Path,
    *,
    partitions: int = 3,
    app_id: str | None = None,
    **extra: str,
) -> dict[str, str]:
    env = {
        "TRUST_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "TRUST_TOPIC_PREFIX": prefix,
        "TRUST_PARTITIONS": str(partitions),
        "TRUST_APP_ID": app_id or f"{prefix}scorer",
        "TRUST_STATE_DIR": str(state_dir),
        "TRUST_WEB_PORT": str(free_port()),
        "TRUST_LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    }
    env.update({f"TRUST_{k.upper()}": v for k, v in extra.items()})
    return env
