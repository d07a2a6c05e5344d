"""A worker runs as its users run it: a subprocess, configured by environment only."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

from aiokafka.admin import AIOKafkaAdminClient

from tests.support.broker import REPO_ROOT
from tests.support.kafka_io import consume, create_topics, produce
from tests.support.signals import DIMENSIONS, signal_value


async def _group_members(bootstrap: str, group: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    # DescribeGroups response: groups[0] = (error_code, group_id, state, protocol_type, protocol,
    # members, ...)
    group_entry = described[0].groups[0]
    return len(group_entry[5])


async def test_worker_joins_its_group_and_stops_cleanly_on_sigterm(
    kafka_bootstrap: str, spawn_worker, topic_prefix: str
) -> None:
    worker = spawn_worker()
    worker.wait_until_assigned(timeout=120)
    app_id = worker.env["TRUST_APP_ID"]

    assert await _group_members(kafka_bootstrap, app_id) == 1
    # It owns every partition and its clock runs: ticks arrive on the internal topic.
    ticks = await consume(
        kafka_bootstrap,
        [f"{topic_prefix}trust.internal.ticks"],
        until=lambda r: len({x.partition for x in r}) == 3,
        timeout=30,
        what="a tick on each of the 3 partitions",
    )
    assert {r.partition for r in ticks} == {0, 1, 2}

    assert worker.terminate(timeout=60) == 0
    log = worker.log
    assert "Traceback" not in log, log[-4000:]
    assert await _group_members(kafka_bootstrap, app_id) == 0


async def test_worker_refuses_to_start_when_signal_topics_disagree_in_partition_count(
    kafka_bootstrap: str, spawn_worker, topic_prefix: str
) -> None:
    await create_topics(kafka_bootstrap, [f"{topic_prefix}signals.policy_compliance"], 3)
    await create_topics(kafka_bootstrap, [f"{topic_prefix}signals.security_posture"], 2)

    worker = spawn_worker(partitions="3")
    assert worker.process is not None
    code = worker.process.wait(timeout=60)

    assert code == 2
    log = worker.log
    assert "must share one partition count" in log
    assert f"{topic_prefix}signals.security_posture=2" in log
    assert "Traceback" not in log


async def test_a_worker_stopped_while_draining_a_backlog_writes_what_it_holds_and_exits_cleanly(
    kafka_bootstrap: str, spawn_worker, topic_prefix: str
) -> None:
    # States are written every 30 s only: on SIGTERM it holds tens of thousands changed states.
    worker = spawn_worker(start=False, state_flush_seconds="30", partitions="6")
    await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "streams", "topics"],
        cwd=REPO_ROOT,
        env={**os.environ, **worker.env},
        check=True,
        capture_output=True,
        timeout=120,
    )
    await produce(
        kafka_bootstrap,
        (
            (
                f"{topic_prefix}signals.{DIMENSIONS[i % 5]}",
                f"did:mesh:backlog-{i % 60_000:05d}".encode(),
                signal_value(f"did:mesh:backlog-{i % 60_000:05d}", 0.8),
            )
            for i in range(200_000)
        ),
    )
    worker.start()
    worker.wait_until_ready(timeout=120)
    worker.wait_for_log("Progress: signals applied", timeout=60)
    started = time.monotonic()
    assert worker.terminate(timeout=60) == 0, worker.log[-4000:]
    log = worker.log_since_start()
    print(f"stopped in {time.monotonic() - started:.1f} s")
    assert "Final write of staged state skipped" not in log, log[-4000:]
    assert "Traceback" not in log, log[-4000:]
