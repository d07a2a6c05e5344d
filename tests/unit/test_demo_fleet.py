"""``demo --fleet-only``: the demo's fleet alone, against the broker and topics the settings name,
starting no broker and no worker (docker-compose.yml runs it beside its worker)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from typing import Any

import pytest

from streams import demo
from streams.__main__ import build_parser
from streams.kafka import clients
from streams.kafka.topics import TopicNames
from tests.support.broker import REPO_ROOT


def _never(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("--fleet-only must start no broker and no worker")


@pytest.fixture
def nothing_started(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "_start_local_broker", _never)
    monkeypatch.setattr(demo, "_start_worker", _never)
    monkeypatch.setattr(demo, "_main", _never)


def test_the_flag_is_off_by_default_and_parses() -> None:
    assert build_parser().parse_args(["demo"]).fleet_only is False
    args = build_parser().parse_args(["demo", "--fleet-only", "--agents", "7"])
    assert args.fleet_only is True and args.agents == 7


def test_the_fleet_runs_against_the_configured_broker_and_topics(
    monkeypatch: pytest.MonkeyPatch, nothing_started: None
) -> None:
    monkeypatch.setenv("TRUST_KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    monkeypatch.setenv("TRUST_TOPIC_PREFIX", "fleet-test.")
    monkeypatch.setenv("TRUST_WINDOW_SECONDS", "12")
    ran: list[tuple[argparse.Namespace, clients.KafkaConnection, TopicNames, float]] = []

    async def fleet(
        args: argparse.Namespace,
        connection: clients.KafkaConnection,
        names: TopicNames,
        window_s: float,
    ) -> None:
        ran.append((args, connection, names, window_s))

    monkeypatch.setattr(demo, "_fleet", fleet)
    args = build_parser().parse_args(["demo", "--fleet-only", "--agents", "5"])

    assert demo.run_demo(args) == 0

    ((given, connection, names, window_s),) = ran
    assert given.agents == 5
    assert connection.bootstrap_servers == "kafka:9092"
    assert names.scores == "fleet-test.trust.scores"
    # The worker's window applies to what the fleet shows, not the demo's own default.
    assert window_s == 12.0


def test_without_a_configured_broker_it_says_so_and_starts_nothing(
    monkeypatch: pytest.MonkeyPatch, nothing_started: None
) -> None:
    monkeypatch.delenv("TRUST_KAFKA_BOOTSTRAP_SERVERS", raising=False)
    args = build_parser().parse_args(["demo", "--fleet-only"])
    with pytest.raises(demo.DemoError, match="TRUST_KAFKA_BOOTSTRAP_SERVERS"):
        demo.run_demo(args)


def test_the_command_line_refuses_it_in_one_line_without_a_broker() -> None:
    environment = {k: v for k, v in os.environ.items() if not k.upper().startswith("TRUST_")}
    result = subprocess.run(
        [sys.executable, "-m", "streams", "demo", "--fleet-only"],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "--fleet-only starts no broker" in lines[0]
    assert "TRUST_KAFKA_BOOTSTRAP_SERVERS" in lines[0]
