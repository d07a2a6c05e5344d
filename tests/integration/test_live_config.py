"""Operators change weights and thresholds while workers run; invalid changes change nothing, and
no record on the config topic can displace the last valid configuration."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from datetime import datetime

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import MessageSizeTooLargeError

from streams.kafka.topicadmin import ensure_topics
from streams.processing.config_topic import CONFIG_KEY, publish_config, read_config
from streams.scoring.model import ScoringConfig
from streams.settings import Settings
from tests.oracle import OracleAgent
from tests.support.cli import run_cli
from tests.support.kafka_io import consume, produce
from tests.support.signals import Fleet
from tests.support.worker import WorkerProcess

NEW_WEIGHTS = (0.1, 0.1, 0.1, 0.6, 0.1)
IN_FORCE = re.compile(
    r"^\[([0-9-]+ [0-9:,]+)\].*Scoring configuration version (\d+) in force", re.M
)


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(env, *args)


def in_force_at(worker: WorkerProcess, version: int, timeout: float) -> float:
    """Wall-clock time (epoch s) at which the worker logged ``version`` in force."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for stamp, logged in IN_FORCE.findall(worker.log):
            if int(logged) == version:
                return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
        time.sleep(0.1)
    raise AssertionError(
        f"version {version} not in force within {timeout} s:\n{worker.log[-3000:]}"
    )


async def test_config_changes_reach_every_worker_and_invalid_ones_change_nothing(
    kafka_bootstrap: str, spawn_worker, topic_prefix: str
) -> None:
    settings = {"window_seconds": "2", "grace_seconds": "1", "partitions": "2"}
    first = spawn_worker("w1", **settings)
    first.wait_until_assigned(timeout=120)
    second = spawn_worker("w2", **settings)
    second.wait_until_assigned(timeout=120)
    env = first.env

    rejected = cli(env, "config", "set", "--weights", "0.5,0.5,0.5,0,0")
    assert rejected.returncode == 2
    assert "rejected, nothing changed" in rejected.stderr and "sum to 1.0" in rejected.stderr
    assert json.loads(cli(env, "config", "get").stdout)["version"] == 0

    published_at = time.time()
    accepted = cli(env, "config", "set", "--weights", ",".join(map(str, NEW_WEIGHTS)))
    assert accepted.returncode == 0, accepted.stderr
    version = json.loads(accepted.stdout)["version"]
    assert version >= 1
    lags = [in_force_at(w, version, timeout=60) - published_at for w in (first, second)]
    print(f"configuration version {version} in force after {max(lags):.3f} s on both workers")
    assert max(lags) < 60
    shown = json.loads(cli(env, "config", "get").stdout)
    assert shown["version"] == version
    assert tuple(shown["weights"].values()) == NEW_WEIGHTS

    # Later updates name the version and use its weights, on agents of both workers.
    fleet = Fleet(topic_prefix)
    agents = [f"did:mesh:tuned-{i}" for i in range(40)]
    await produce(
        kafka_bootstrap,
        [fleet.record(did, "security_posture", 0.5) for did in agents]
        + [fleet.record(did, "policy_compliance", 1.0) for did in agents],
    )
    updates = await consume(
        kafka_bootstrap,
        [f"{topic_prefix}trust.scores"],
        until=lambda r: {u.key for u in r} >= {a.encode() for a in agents},
        timeout=60,
        what="an update for every tuned agent",
    )
    assert {u.partition for u in updates} == {0, 1}
    for update in updates:
        body = update.json()
        assert body["weights_version"] == version
        expected = OracleAgent.replay(fleet.sent[body["agent_did"]], NEW_WEIGHTS).total_score
        assert body["total_score"] == expected

    # A record that bypassed validation is ignored by the workers: the configuration stays.
    await produce(kafka_bootstrap, [(f"{topic_prefix}trust.config", b"scoring-config", b"{}")])
    second.wait_for_log("Ignoring invalid scoring configuration", timeout=30)
    assert json.loads(cli(env, "config", "get").stdout)["version"] == version
    assert "Traceback" not in first.log + second.log


async def test_a_floor_on_security_posture_revokes_an_agent_failing_only_that_dimension(
    kafka_bootstrap: str, spawn_worker, topic_prefix: str
) -> None:
    worker = spawn_worker(window_seconds="2", grace_seconds="1")
    worker.wait_until_assigned(timeout=120)
    fleet = Fleet(topic_prefix)
    scores = f"{topic_prefix}trust.scores"
    revocations = f"{topic_prefix}trust.revocations"

    # No floor (the default): failing one dimension alone leaves the total at 375, not revoked.
    unfloored = "did:mesh:insecure-before"
    await produce(kafka_bootstrap, [fleet.record(unfloored, "security_posture", 0.0)] * 5)
    updates = await consume(
        kafka_bootstrap, [scores], until=lambda r: len(r) >= 1, timeout=30, what="its update"
    )
    assert updates[0].json()["total_score"] == 375 and updates[0].json()["revoked"] is False

    accepted = cli(worker.env, "config", "set", "--floor", "security_posture=40:3")
    assert accepted.returncode == 0, accepted.stderr
    version = json.loads(accepted.stdout)["version"]
    in_force_at(worker, version, timeout=30)

    floored = "did:mesh:insecure-after"
    await produce(kafka_bootstrap, [fleet.record(floored, "security_posture", 0.0)] * 5)
    revoked = await consume(
        kafka_bootstrap,
        [revocations],
        until=lambda r: any(x.key == floored.encode() for x in r),
        timeout=30,
        what="the floor's revocation",
    )
    body = next(x.json() for x in revoked if x.key == floored.encode())
    assert body["total_score"] == 375
    assert body["reason"] == "security_posture score 0.0 below its floor 40 (after 3 signals)"
    assert body["weights_version"] == version
    assert all(x.key != unfloored.encode() for x in revoked)


async def topic_settings(bootstrap: str, topic: str) -> dict[str, str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        (response,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic)]
        )
    finally:
        await admin.close()
    (resource,) = response.to_object()["resources"]
    return {e["config_names"]: e["config_value"] for e in resource["config_entries"]}


def ready_version(worker: WorkerProcess) -> int:
    worker.wait_until_ready(timeout=120)
    with urllib.request.urlopen(f"{worker.base_url}/readyz", timeout=10) as response:
        return int(json.loads(response.read())["config_version"])


async def test_forged_config_records_never_displace_the_last_valid_configuration(
    kafka_bootstrap: str, spawn_worker, topic_prefix: str
) -> None:
    settings = {"window_seconds": "2", "grace_seconds": "1", "partitions": "1"}
    first = spawn_worker("w1", **settings)
    first.wait_until_assigned(timeout=120)
    topic = f"{topic_prefix}trust.config"
    kept = await topic_settings(kafka_bootstrap, topic)
    assert kept["cleanup.policy"] == "delete"
    assert (kept["retention.ms"], kept["retention.bytes"]) == ("-1", "-1")
    assert kept["max.message.bytes"] == "65536"

    accepted = cli(first.env, "config", "set", "--weights", ",".join(map(str, NEW_WEIGHTS)))
    assert accepted.returncode == 0, accepted.stderr
    version = json.loads(accepted.stdout)["version"]
    in_force_at(first, version, timeout=60)

    valid_under_another_key = json.loads(accepted.stdout)
    forged: list[tuple[str, bytes | None, bytes | None]] = [
        (topic, CONFIG_KEY, b"{}"),
        (topic, CONFIG_KEY, b"\xff\xfe\x00 not a configuration"),
        (topic, CONFIG_KEY, b"[" * 10_000 + b"]" * 10_000),
        (topic, CONFIG_KEY, None),  # a tombstone: under compaction it would delete the key
        (topic, b"another-key", json.dumps(valid_under_another_key).encode()),
    ]
    placed = await produce(kafka_bootstrap, forged)
    last_forged = max(offset for _, _, offset in placed)
    with pytest.raises(MessageSizeTooLargeError):  # the broker refuses it outright
        await produce(kafka_bootstrap, [(topic, CONFIG_KEY, b"x" * 100_000)])
    first.wait_for_log(f"offset {last_forged} (version {version} stays in force)", timeout=30)
    assert first.log_since_start().count("Ignoring invalid scoring configuration") == len(forged)

    # A worker that starts now reads the whole history and uses the last valid version.
    second = spawn_worker("w2", **settings)
    assert ready_version(second) == version
    second.wait_for_log(f"offset {last_forged} (version {version} stays in force)", timeout=30)
    assert json.loads(cli(first.env, "config", "get").stdout)["version"] == version
    # The first worker restarted, too.
    assert first.terminate() == 0
    first.start()
    assert ready_version(first) == version

    # A later valid update still comes into force everywhere, with a higher version.
    newer = cli(first.env, "config", "set", "--revocation-threshold", "250")
    assert newer.returncode == 0, newer.stderr
    newer_version = json.loads(newer.stdout)["version"]
    assert newer_version > last_forged + 1 > version
    for worker in (first, second):
        in_force_at(worker, newer_version, timeout=60)
    assert "Traceback" not in first.log + second.log


async def test_ensure_topics_gives_a_compacted_config_topic_its_whole_history(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    # A config topic as older releases created it, with a setting of the operator's own.
    topic = f"{topic_prefix}trust.config"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(
                    topic,
                    1,
                    1,
                    topic_configs={"cleanup.policy": "compact", "segment.ms": "3600000"},
                )
            ]
        )
    finally:
        await admin.close()
    published = await publish_config(
        kafka_bootstrap, topic, ScoringConfig.validated(NEW_WEIGHTS), requested_by="test"
    )

    settings = Settings(kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix)
    report = await ensure_topics(settings)
    assert topic not in report.created
    assert report.config_topic_changes["cleanup.policy"] == ("compact", "delete")
    assert report.config_topic_changes["retention.ms"][1] == "-1"
    now = await topic_settings(kafka_bootstrap, topic)
    assert now["cleanup.policy"] == "delete"
    assert (now["retention.ms"], now["retention.bytes"]) == ("-1", "-1")
    assert now["max.message.bytes"] == "65536"
    assert now["segment.ms"] == "3600000"  # the operator's own setting is kept

    again = await ensure_topics(settings)
    assert again.config_topic_changes == {}
    in_force = await read_config(kafka_bootstrap, topic, settings.scoring_config)
    assert in_force.version == published.version and in_force.weights == NEW_WEIGHTS
