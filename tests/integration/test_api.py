"""The HTTP API: every endpoint answers for agents of either worker, through either worker."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.error
import urllib.request

from aiokafka.partitioner import murmur2

from tests.oracle import OracleAgent
from tests.support.cli import run_cli
from tests.support.kafka_io import consume, produce
from tests.support.signals import Fleet

TOKEN = "s3cret-operator-token"


def call(port: str, method: str, path: str, body: dict | None = None, token: str | None = None):  # type: ignore[no-untyped-def,type-arg]
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}"} if token else {},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _explain(did: str, port: str) -> subprocess.CompletedProcess[str]:
    return run_cli({}, "explain", "--agent", did, "--url", f"http://127.0.0.1:{port}")


async def test_every_endpoint_answers_for_either_workers_agents_through_either_worker(
    kafka_bootstrap: str, spawn_worker, topic_prefix: str
) -> None:
    settings = {
        "window_seconds": "2",
        "grace_seconds": "1",
        "partitions": "2",
        "admin_token": TOKEN,
    }
    first = spawn_worker("w1", **settings)
    first.wait_until_assigned(timeout=120)
    second = spawn_worker("w2", **settings)
    second.wait_until_assigned(timeout=120)
    first.wait_for_log("Assigned partitions [", timeout=60)
    ports = [first.env["TRUST_WEB_PORT"], second.env["TRUST_WEB_PORT"]]
    for worker in (first, second):
        worker.wait_until_ready()

    # One agent per partition, so each worker owns one of them.
    agents: dict[int, str] = {}
    i = 0
    while len(agents) < 2:
        did = f"did:mesh:api-{i}"
        agents.setdefault((murmur2(did.encode()) & 0x7FFFFFFF) % 2, did)
        i += 1
    fleet = Fleet(topic_prefix)
    records = []
    for did in agents.values():
        records += [fleet.record(did, "policy_compliance", 0.2, source="policy_engine")]
        records += [fleet.record(did, "security_posture", 0.9, source="ids")] * 3
    await produce(kafka_bootstrap, records)
    await consume(
        kafka_bootstrap,
        [f"{topic_prefix}trust.scores"],
        until=lambda r: len(r) >= 2,
        timeout=30,
        what="both agents' updates",
    )

    for did in agents.values():
        oracle = OracleAgent.replay(fleet.sent[did])
        for port in ports:
            status, score = call(port, "GET", f"/agents/{did}/score")
            assert status == 200, score
            assert score["total_score"] == oracle.total_score
            status, why = call(port, "GET", f"/agents/{did}/explanation")
            assert status == 200, why
            assert why["dimensions"]["security_posture"]["signal_count"] == 3
            contribution = why["dimensions"]["policy_compliance"]["contribution"]
            assert contribution == why["dimensions"]["policy_compliance"]["score"] * 0.25 * 10
            # Topics interleave freely, so the order across dimensions is not fixed.
            sources = sorted(s["source"] for s in why["recent_signals"])
            assert sources == ["ids", "ids", "ids", "policy_engine"]
            assert why["history"] and why["trend"] == "stable"

    for port in ports:
        assert call(port, "GET", "/agents/did:mesh:nobody/score")[0] == 404
        assert call(port, "GET", "/agents/not-a-did/explanation")[0] == 422
        status, risky = call(port, "GET", "/agents/at-risk")
        assert status == 200 and {a["agent_did"] for a in risky["agents"]} <= set(agents.values())
        status, report = call(port, "GET", "/health-report?days=7")
        assert status == 200 and report["total_agents"] == 2
        assert set(report["agents"]) == set(agents.values())
        assert call(port, "GET", "/health-report?days=zero")[0] == 422
    # Reading an unknown agent created nothing.
    assert call(ports[0], "GET", "/health-report")[1]["total_agents"] == 2

    good = {
        "weights": {
            "policy_compliance": 0.2,
            "resource_efficiency": 0.2,
            "output_quality": 0.2,
            "security_posture": 0.2,
            "collaboration_health": 0.2,
        },
        "revocation_threshold": 300,
        "warning_threshold": 500,
    }
    assert call(ports[1], "PUT", "/config", good)[0] == 401
    assert call(ports[1], "PUT", "/config", good, token="wrong")[0] == 403
    bad = {**good, "weights": {**good["weights"], "security_posture": 0.9}}
    status, answer = call(ports[1], "PUT", "/config", bad, token=TOKEN)
    assert status == 422 and "sum to 1.0" in answer["error"]
    status, answer = call(ports[1], "PUT", "/config", good, token=TOKEN)
    assert status == 200 and answer["version"] >= 1
    deadline = time.monotonic() + 30
    while call(ports[0], "GET", "/config")[1]["version"] != answer["version"]:
        assert time.monotonic() < deadline, "the new configuration never reached worker 1"
        await asyncio.sleep(0.2)

    explained = _explain(agents[1], ports[0])
    assert explained.returncode == 0, explained.stderr
    assert agents[1] in explained.stdout and "security_posture" in explained.stdout
    assert "policy_engine" in explained.stdout

    assert call(ports[0], "POST", f"/agents/{agents[0]}/reinstate", {"reason": "x"})[0] == 401
    assert call(ports[0], "POST", f"/agents/{agents[0]}/reinstate", [1], token=TOKEN)[0] == 400
    assert "Traceback" not in first.log + second.log
