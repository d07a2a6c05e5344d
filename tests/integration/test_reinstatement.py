"""An operator reinstates a revoked agent: audited, and a later fall revokes it again."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request

import pytest

from streams.messages import ReinstatementEvent, RevocationEvent
from tests.oracle import dimension_score
from tests.support.cli import run_cli
from tests.support.kafka_io import consume, produce
from tests.support.signals import Fleet

TOKEN = "operator-token"


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(env, *args)


async def test_reinstated_agent_is_audited_unrevoked_and_revoked_again_on_a_later_fall(
    kafka_bootstrap: str, spawn_worker, topic_prefix: str
) -> None:
    worker = spawn_worker(window_seconds="2", grace_seconds="1", admin_token=TOKEN)
    worker.wait_until_assigned(timeout=120)
    fleet = Fleet(topic_prefix)
    did = "did:mesh:second-chance"
    revocations = f"{topic_prefix}trust.revocations"

    refused = cli(worker.env, "reinstate", "--agent", did, "--reason", "x", "--timeout", "3")
    assert refused.returncode == 1 and "unknown or not revoked" in refused.stderr

    bad = [("security_posture", 0.0), ("policy_compliance", 0.0)]
    await produce(kafka_bootstrap, [fleet.record(did, d, v) for d, v in bad])
    first = await consume(
        kafka_bootstrap,
        [revocations],
        until=lambda r: len(r) >= 1,
        timeout=30,
        what="the first revocation",
    )
    first_revocation = RevocationEvent.model_validate(first[0].json())

    done = cli(
        worker.env,
        "reinstate",
        "--agent",
        did,
        "--reason",
        "false positive: IDS bug",
        "--by",
        "secops",
    )
    assert done.returncode == 0, done.stderr
    audit = ReinstatementEvent.model_validate(json.loads(done.stdout))
    assert audit.agent_did == did and audit.requested_by == "secops"
    assert audit.lifted_revocation_id == first_revocation.revocation_id
    records = await consume(
        kafka_bootstrap,
        [revocations],
        until=lambda r: len(r) >= 2,
        timeout=30,
        what="the audit event on the revocation topic",
    )
    assert records[1].json()["type"] == "reinstated" and records[1].key == did.encode()

    # Good behaviour is scored as not revoked...
    await produce(kafka_bootstrap, [fleet.record(did, "security_posture", 1.0)] * 20)
    updates = await consume(
        kafka_bootstrap,
        [f"{topic_prefix}trust.scores"],
        until=lambda r: any(
            u.json()["dimensions"]["security_posture"]["signal_count"] == 21 for u in r
        ),
        timeout=30,
        what="an update after the good signals",
    )
    latest = updates[-1].json()
    assert latest["revoked"] is False and latest["total_score"] >= 300

    # ...and a later fall below the threshold revokes again, as a new revocation.
    await produce(
        kafka_bootstrap,
        [fleet.record(did, "output_quality", 0.0)] * 3
        + [fleet.record(did, "collaboration_health", 0.0)] * 3
        + [fleet.record(did, "resource_efficiency", 0.0)] * 3,
    )
    records = await consume(
        kafka_bootstrap,
        [revocations],
        until=lambda r: len(r) >= 3,
        timeout=30,
        what="the second revocation",
    )
    second = RevocationEvent.model_validate(records[2].json())
    assert second.agent_did == did
    assert second.revocation_id != first_revocation.revocation_id

    # The same through the HTTP API of the worker, with the operator's token.
    status, accepted = _post(
        worker.env["TRUST_WEB_PORT"],
        f"/agents/{did}/reinstate",
        {"reason": "reviewed", "requested_by": "oncall"},
        TOKEN,
    )
    assert status == 202, accepted
    records = await consume(
        kafka_bootstrap,
        [revocations],
        until=lambda r: len(r) >= 4,
        timeout=30,
        what="the audit event of the HTTP reinstatement",
    )
    audit = ReinstatementEvent.model_validate(records[3].json())
    assert audit.request_id == accepted["request_id"] and audit.requested_by == "oncall"
    assert audit.lifted_revocation_id == second.revocation_id
    assert "Traceback" not in worker.log


def _post(port: str, path: str, body: dict, token: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        method="POST",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def test_an_agent_a_floor_revoked_stays_reinstated_until_that_dimension_falls_further(
    kafka_bootstrap: str, spawn_worker, topic_prefix: str
) -> None:
    worker = spawn_worker(window_seconds="1", grace_seconds="0.5")
    worker.wait_until_assigned(timeout=120)
    floor = cli(worker.env, "config", "set", "--floor", "security_posture=40:3")
    assert floor.returncode == 0, floor.stderr
    version = json.loads(floor.stdout)["version"]
    worker.wait_for_log(f"Scoring configuration version {version} in force", timeout=60)
    fleet = Fleet(topic_prefix)
    did = "did:mesh:floored-then-reinstated"
    scores = f"{topic_prefix}trust.scores"
    revocations = f"{topic_prefix}trust.revocations"

    # Security at 20, below its floor of 40 (the total, 425, is far above the threshold).
    await produce(kafka_bootstrap, [fleet.record(did, "security_posture", 0.2)] * 3)
    first = await consume(
        kafka_bootstrap,
        [revocations],
        until=lambda r: len(r) >= 1,
        timeout=30,
        what="the floor's revocation",
    )
    revoked = RevocationEvent.model_validate(first[0].json())
    assert revoked.reason == "security_posture score 20.0 below its floor 40 (after 3 signals)"
    assert revoked.total_score == 425

    done = cli(worker.env, "reinstate", "--agent", did, "--reason", "accepted risk")
    assert done.returncode == 0, done.stderr

    # Windows close, one after another, with security still at 20 and no new bad signal: the
    # operator accepted that level, so the agent stays reinstated.
    for batch in range(1, 4):
        await produce(kafka_bootstrap, [fleet.record(did, "policy_compliance", 1.0)])
        updates = await consume(
            kafka_bootstrap,
            [scores],
            until=lambda r, n=batch: any(
                u.json()["dimensions"]["policy_compliance"]["signal_count"] == n for u in r
            ),
            timeout=30,
            what=f"the update of window {batch} after the reinstatement",
        )
        latest = updates[-1].json()
        assert latest["revoked"] is False
        assert latest["dimensions"]["security_posture"]["score"] == pytest.approx(20.0)
    records = await consume(
        kafka_bootstrap, [revocations], until=lambda r: len(r) >= 2, timeout=30, what="audit"
    )
    assert [r.json().get("type") for r in records[1:]] == ["reinstated"]  # nothing after it

    # A further fall of that dimension revokes it again, as a new revocation.
    await produce(kafka_bootstrap, [fleet.record(did, "security_posture", 0.0)])
    records = await consume(
        kafka_bootstrap,
        [revocations],
        until=lambda r: len(r) >= 3,
        timeout=30,
        what="the second revocation",
    )
    second = RevocationEvent.model_validate(records[2].json())
    assert second.revocation_id != revoked.revocation_id
    fallen = dimension_score([0.2, 0.2, 0.2, 0.0])
    assert (
        second.reason == f"security_posture score {fallen:.1f} below its floor 40 (after 4 signals)"
    )
    assert second.trigger.kind == "signal"
    assert "Traceback" not in worker.log
