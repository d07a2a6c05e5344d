"""Operators change weights and thresholds while workers run; invalid changes change nothing."""

from __future__ import annotations

import json
import re
import subprocess
import time
from datetime import datetime

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
