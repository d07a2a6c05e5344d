"""The development broker behaves as documented, and a broker that dies fails tests clearly.

Runs a second, private broker (its own state folder and ports) so the session's broker is never
disturbed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.broker import LOCAL_BROKER, local_broker, reachable
from tests.support.kafka_io import DeadlineExceeded, consume, create_topics, produce, unique_name
from tests.support.worker import free_port


@pytest.fixture
def private_broker_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {
        "KAFKA_LOCAL_HOME": str(tmp_path / "kafka"),
        "KAFKA_LOCAL_PORT": str(free_port()),
        "KAFKA_LOCAL_CONTROLLER_PORT": str(free_port()),
        "KAFKA_HEAP_OPTS": "-Xms256m -Xmx512m",
    }
    yield env
    subprocess.run(
        [str(LOCAL_BROKER), "stop"],
        env={**os.environ, **env},
        check=False,
        capture_output=True,
        timeout=120,
    )


def _status(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LOCAL_BROKER), "status"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


async def test_start_start_again_stop_start(private_broker_env: dict[str, str]) -> None:
    env = private_broker_env
    address = local_broker("start", env)
    assert address == f"127.0.0.1:{env['KAFKA_LOCAL_PORT']}"
    assert reachable(address)

    began = time.monotonic()
    assert local_broker("start", env) == address, "a second start must print the same address"
    assert time.monotonic() - began < 5, "a second start must not start another broker"
    status = _status(env)
    assert status.returncode == 0 and f"running at {address}" in status.stdout

    topic = unique_name("lifecycle")
    await create_topics(address, [topic])
    await produce(address, [(topic, b"k", b"before restart")])

    assert local_broker("stop", env) is not None
    status = _status(env)
    assert status.returncode == 3 and "not running" in status.stdout
    assert not reachable(address)

    assert local_broker("start", env) == address
    records = await consume(
        address,
        [topic],
        until=lambda r: len(r) >= 1,
        timeout=30,
        what="the record written before the restart",
    )
    assert records[0].value == b"before restart", "data must survive a stop and start"


async def test_a_broker_that_dies_fails_a_wait_clearly_and_quickly(
    private_broker_env: dict[str, str],
) -> None:
    env = private_broker_env
    address = local_broker("start", env)
    topic = unique_name("dies")
    await create_topics(address, [topic])
    await produce(address, [(topic, b"k", b"v")])

    pid = int((Path(env["KAFKA_LOCAL_HOME"]) / "kafka.pid").read_text().strip())
    checks = 0

    def kill_broker_mid_wait(records: list) -> bool:  # type: ignore[type-arg]
        nonlocal checks
        checks += 1
        if checks == 3:  # the consumer runs and has read the record: now the broker dies
            assert len(records) == 1
            os.kill(pid, signal.SIGKILL)
        return False

    began = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="no longer answers"):
        await consume(
            address,
            [topic],
            until=kill_broker_mid_wait,
            timeout=10,
            what="a record that will never come",
        )
    assert checks > 3
    assert time.monotonic() - began < 30

    # Starting to wait on a dead broker fails clearly too.
    with pytest.raises(DeadlineExceeded, match="no longer answers"):
        await consume(address, [topic], until=lambda r: False, timeout=5, what="anything")

    # The script notices the broker is gone, and a start recovers it.
    assert _status(env).returncode == 3
    assert local_broker("start", env) == address
