"""Two workers bound to every interface (as in containers), each advertising a URL the other can
call: reads about either worker's agents are forwarded and answered through either worker, with
the read token; Faust's own /router/ and /table/ views are gone; and with one worker stopped, the
fleet-wide views answer within the forwarding timeout, naming it."""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request
from typing import Any

from aiokafka.partitioner import murmur2

from tests.oracle import OracleAgent
from tests.support.kafka_io import consume, produce
from tests.support.signals import Fleet

READ = "read-token-for-tests"
ADMIN = "admin-token-for-tests"
TIMEOUT = 2.0


def call(port: str, path: str, token: str | None = READ) -> tuple[int, Any, dict[str, str]]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        headers={"Authorization": f"Bearer {token}"} if token else {},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, _parsed(response.read()), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, _parsed(exc.read()), dict(exc.headers)


def _parsed(body: bytes) -> Any:
    """JSON, or the text itself (metrics, a plain 404)."""
    try:
        return json.loads(body or b"null")
    except ValueError:
        return body.decode(errors="replace")


def every_page(port: str, path: str, limit: int) -> tuple[list[Any], list[dict[str, Any]]]:
    """Every agent of a paginated view, walking its cursors; and each page's body."""
    agents: list[Any] = []
    pages: list[dict[str, Any]] = []
    cursor = None
    sep = "&" if "?" in path else "?"
    while True:
        query = f"{path}{sep}limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        status, body, _ = call(port, query)
        assert status == 200, body
        pages.append(body)
        found = body["agents"]
        agents += list(found) if isinstance(found, dict) else found
        cursor = body["next_cursor"]
        if cursor is None:
            return agents, pages
        assert len(pages) < 50, "the cursor never ended"


async def test_forwarding_between_workers_bound_to_every_interface(
    kafka_bootstrap: str, spawn_worker, topic_prefix: str
) -> None:
    settings = {
        "window_seconds": "2",
        "grace_seconds": "1",
        "partitions": "4",
        "web_host": "0.0.0.0",
        "api_read_token": READ,
        "admin_token": ADMIN,
        "web_forward_timeout_seconds": str(TIMEOUT),
        # The stopped worker stays in the group (and so is asked) for the whole test.
        "session_timeout_seconds": "60",
    }
    first = spawn_worker("w1", start=False, **settings)
    first.env["TRUST_WEB_ADVERTISED_URL"] = f"http://127.0.0.1:{first.env['TRUST_WEB_PORT']}/"
    first.start()
    first.wait_until_assigned(timeout=120)
    # The second advertises its default: bound to every interface, its address towards the
    # broker (loopback here), never 0.0.0.0.
    second = spawn_worker("w2", **settings)
    second.wait_until_assigned(timeout=120)
    second.wait_for_log("reach this one's HTTP API at http://", timeout=30)
    assert "API at http://0.0.0.0" not in second.log
    first.wait_for_log("Assigned partitions [", timeout=60)
    for worker in (first, second):
        worker.wait_until_ready()
    ports = [first.env["TRUST_WEB_PORT"], second.env["TRUST_WEB_PORT"]]

    # An agent on each partition, so each worker owns some; low values put some at risk.
    agents: dict[int, str] = {}
    i = 0
    while len(agents) < 4:
        did = f"did:mesh:fwd-{i}"
        agents.setdefault((murmur2(did.encode()) & 0x7FFFFFFF) % 4, did)
        i += 1
    fleet = Fleet(topic_prefix)
    records = []
    for n, did in enumerate(agents.values()):
        value = 0.1 if n % 2 else 0.9
        records += [fleet.record(did, "policy_compliance", value, source="engine-\x1b[31m")]
        records += [fleet.record(did, "output_quality", value, source="qa")] * 2
    await produce(kafka_bootstrap, records)
    await consume(
        kafka_bootstrap,
        [f"{topic_prefix}trust.scores"],
        until=lambda r: len(r) >= 4,
        timeout=30,
        what="every agent's update",
    )

    # Every agent through either worker: half of them forwarded.
    for did in agents.values():
        oracle = OracleAgent.replay(fleet.sent[did])
        for port in ports:
            status, score, _ = call(port, f"/agents/{did}/score")
            assert status == 200, score
            assert score["total_score"] == oracle.total_score
            status, why, _ = call(port, f"/agents/{did}/explanation", token=ADMIN)
            assert status == 200, why
            assert sorted(s["source"] for s in why["recent_signals"]) == [
                "engine-\x1b[31m",
                "qa",
                "qa",
            ]

    # Tokens: reads need one, the admin token reads too, health and metrics stay open.
    for port in ports:
        did = agents[0]
        for token in (None, "wrong"):
            for path in (f"/agents/{did}/score", "/agents/at-risk", "/health-report", "/config"):
                status, body, headers = call(port, path, token=token)
                assert status == 401 and "error" in body, (path, token, body)
                assert headers.get("WWW-Authenticate", "").startswith("Bearer")
        for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
            assert call(port, path, token=None)[0] == 200, path
        for path in ("/router/", "/router", "/table/", "/table", f"/table/agent-state/{did}/"):
            assert call(port, path, token=ADMIN)[0] == 404, path
    status, metrics, _ = call(ports[0], "/metrics", token=None)
    assert "did:" not in str(metrics)

    # Fleet-wide views, a page at a time, complete through either worker.
    at_risk = {did for n, did in enumerate(agents.values()) if n % 2}
    for port in ports:
        found, pages = every_page(port, "/agents/at-risk", limit=1)
        assert {a["agent_did"] for a in found} == at_risk
        assert not any(p["partial"] for p in pages)
        found, pages = every_page(port, "/health-report?days=7", limit=3)
        assert set(found) == set(agents.values())
        assert pages[0]["total_agents"] == 4 and pages[0]["at_risk_agents"] == len(at_risk)
        assert not any(p["partial"] for p in pages) and len(pages) == 2

    # The second worker stops answering (paused: its connections open, nothing answers).
    assert second.process is not None
    second_url = _advertised(second.log)
    second.process.send_signal(signal.SIGSTOP)
    try:
        missing: set[int] = set()
        for path in ("/agents/at-risk", "/health-report"):
            started = time.monotonic()
            status, body, _ = call(ports[0], path)
            took = time.monotonic() - started
            assert status == 200, body
            assert body["partial"] is True and body["missing_workers"] == [second_url], body
            assert body["missing_partitions"], body
            assert took < TIMEOUT + 3, f"{path} took {took:.1f} s"
            missing = set(body["missing_partitions"])
        owned_by_second = [did for p, did in agents.items() if p in missing]
        assert owned_by_second
        started = time.monotonic()
        status, body, _ = call(ports[0], f"/agents/{owned_by_second[0]}/score")
        assert status == 504 and second_url in body["error"], body
        assert time.monotonic() - started < TIMEOUT + 3
    finally:
        second.process.send_signal(signal.SIGCONT)
    assert "Traceback" not in first.log + second.log


def _advertised(log: str) -> str:
    marker = "reach this one's HTTP API at "
    return log[log.index(marker) + len(marker) :].split()[0].rstrip("/")
