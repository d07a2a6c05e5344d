"""Where the tests' Kafka broker comes from.

In order: ``KAFKA_BOOTSTRAP_SERVERS`` when set; a Kafka container when a Docker engine answers;
otherwise the project's local KRaft broker (``deploy/local/kafka``), started for the session.
A broker that cannot be had is an error, never a skip: the tests that need Kafka are the point.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCAL_BROKER = REPO_ROOT / "deploy" / "local" / "kafka"


class BrokerUnavailable(RuntimeError):
    """No broker could be had for the tests; the message says what was tried."""


def _docker_engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        result = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and bool(result.stdout.strip())


def reachable(bootstrap: str, timeout: float = 5.0) -> bool:
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def local_broker(command: str, env: dict[str, str] | None = None, timeout: float = 600) -> str:
    """Run ``deploy/local/kafka <command>``; return its last stdout line."""
    result = subprocess.run(
        [str(LOCAL_BROKER), command],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )
    if result.returncode != 0:
        raise BrokerUnavailable(
            f"deploy/local/kafka {command} failed with exit {result.returncode}:\n"
            f"{result.stderr[-3000:]}"
        )
    lines = result.stdout.strip().splitlines()
    return lines[-1] if lines else ""


@contextmanager
def provide_broker() -> Iterator[str]:
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if configured:
        if not reachable(configured):
            raise BrokerUnavailable(f"KAFKA_BOOTSTRAP_SERVERS={configured} does not answer")
        yield configured
        return
    if _docker_engine_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    was_running = (
        subprocess.run([str(LOCAL_BROKER), "status"], capture_output=True, check=False).returncode
        == 0
    )
    address = local_broker("start")
    if not reachable(address):
        raise BrokerUnavailable(f"local broker reported {address!r} but it does not answer")
    try:
        yield address
    finally:
        if not was_running and os.environ.get("TRUST_TESTS_KEEP_BROKER") != "1":
            local_broker("stop", timeout=120)
