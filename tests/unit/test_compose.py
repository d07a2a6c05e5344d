"""docker-compose.yml runs what the README says: a KRaft Kafka, a worker configured for it, and
the demo's fleet publishing to that worker."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from streams.__main__ import build_parser
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


def test_compose_runs_the_demo_fleet_against_the_worker_once_it_is_ready() -> None:
    services = _compose()["services"]
    fleet, worker = services["fleet"], services["worker"]
    assert (ROOT / fleet["build"]["context"] / fleet["build"]["dockerfile"]).is_file()
    args = build_parser().parse_args(fleet["command"])
    assert args.command == "demo" and args.fleet_only, fleet["command"]
    assert fleet["depends_on"]["worker"]["condition"] == "service_healthy"
    assert "/readyz" in " ".join(worker["healthcheck"]["test"])
    # The same broker and the same topics as the worker.
    for variable in ("TRUST_KAFKA_BOOTSTRAP_SERVERS", "TRUST_TOPIC_PREFIX"):
        assert fleet["environment"].get(variable) == worker["environment"].get(variable), variable
    # The worker's API and dashboard, from the host.
    assert "127.0.0.1:6066:6066" in worker["ports"]
    assert worker["environment"]["TRUST_WEB_ADVERTISED_URL"] == "http://worker:6066"


@pytest.mark.parametrize("service", ["worker", "fleet"])
def test_compose_settings_are_valid_settings(service: str) -> None:
    environment = {k: str(v) for k, v in _compose()["services"][service]["environment"].items()}
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
    services = subprocess.run(
        [*command, "-f", str(ROOT / "docker-compose.yml"), "config", "--services"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert services.returncode == 0, services.stderr
    assert set(services.stdout.split()) == {"kafka", "worker", "fleet"}, services.stdout
