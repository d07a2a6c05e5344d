"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.broker import BrokerUnavailable, provide_broker
from tests.support.kafka_io import unique_name
from tests.support.secure_broker import SecureBroker, provide_secure_broker
from tests.support.worker import WorkerProcess, worker_env


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """A real Kafka broker for the whole session. Unavailable is a failure, never a skip."""
    try:
        with provide_broker() as bootstrap:
            yield bootstrap
    except BrokerUnavailable as exc:
        ci = " (CI=true)" if os.environ.get("CI") == "true" else ""
        pytest.fail(f"no Kafka broker for the integration tests{ci}: {exc}", pytrace=False)


@pytest.fixture
def topic_prefix() -> str:
    """Topics of one test never meet another test's: every name starts with this."""
    return unique_name("t") + "."


@pytest.fixture
def spawn_worker(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start workers of the project as subprocesses; all are killed when the test ends."""
    started: list[WorkerProcess] = []

    def spawn(name: str = "w1", start: bool = True, **settings: str) -> WorkerProcess:
        env = worker_env(kafka_bootstrap, topic_prefix, tmp_path / f"state-{name}", **settings)
        worker = WorkerProcess(env=env, log_path=tmp_path / f"{name}.log")
        started.append(worker)
        return worker.start() if start else worker

    yield spawn
    for worker in started:
        worker.ensure_stopped()


@pytest.fixture(scope="session")
def secure_broker() -> Iterator[SecureBroker]:
    """The secured local broker (SASL_SSL, ACLs) for the session, started once for every test
    that needs it. Unavailable is a failure, never a skip."""
    try:
        with provide_secure_broker() as broker:
            yield broker
    except BrokerUnavailable as exc:
        pytest.fail(f"no secured Kafka broker for the tests: {exc}", pytrace=False)
