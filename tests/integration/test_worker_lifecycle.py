"""A worker runs as its users run it: a subprocess, configured by environment only."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient

from tests.support.kafka_io import consume, create_topics


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
