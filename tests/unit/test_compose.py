"""docker-compose.yml runs what the README says: a KRaft Kafka and a worker configured for it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_runs_a_kraft_broker_and_a_worker_built_from_deploy() -> None:
    services = _compose()["services"]
    kafka, worker = services["kafka"], services["worker"]
    assert kafka["image"].startswith("apache/kafka:")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert (ROOT / worker["build"]["context"] / worker["build"]["dockerfile"]).is_file()
    assert worker["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert worker["environment"]["TRUST_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"


def test_compose_worker_settings_are_valid_settings() -> None:
    environment = {k: str(v) for k, v in _compose()["services"]["worker"]["environment"].items()}
    known = {f"TRUST_{name.upper()}" for name in Settings.model_fields}
    assert set(environment) <= known, set(environment) - known
    Settings(**{k.removeprefix("TRUST_").lower(): v for k, v in environment.items()})


def _compose_command() -> list[str] | None:
    """``docker compose`` (the plugin) or ``docker-compose`` (standalone), whichever is here."""
    docker = shutil.which("docker")
    if (
        docker
        and not subprocess.run(
            [docker, "compose", "version"], capture_output=True, check=False
        ).returncode
    ):
        return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    return [standalone] if standalone else None


def test_compose_accepts_the_file_where_compose_is_installed() -> None:
    command = _compose_command()
    if command is None:
        pytest.skip("no compose implementation is installed on this machine")
    result = subprocess.run(
        [*command, "-f", str(ROOT / "docker-compose.yml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
