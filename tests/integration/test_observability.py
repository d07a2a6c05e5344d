"""Every worker reports health, readiness and Prometheus metrics over HTTP."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request

from tests.support.kafka_io import consume, produce
from tests.support.signals import Fleet, signal_topic


def get(port: str, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_for(port: str, path: str, predicate, timeout: float = 60) -> str:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last: tuple[int, str] | None = None
    while time.monotonic() < deadline:
        try:
            last = get(port, path)
        except OSError:
            last = None
        if last is not None and predicate(*last):
            return last[1]
        time.sleep(0.2)
    raise AssertionError(f"{path} never satisfied the check within {timeout} s; last: {last}")


def metric(text: str, name: str, **labels: str) -> float:
    shown = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^{re.escape(name)}{re.escape('{' + shown + '}') if labels else ''} (\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    assert found, f"{name} {labels} not in metrics:\n{text[:3000]}"
    return float(found.group(1))


async def test_health_readiness_and_metrics(
    kafka_bootstrap: str, spawn_worker, topic_prefix: str
) -> None:
    worker = spawn_worker(window_seconds="2", grace_seconds="1")
    port = worker.env["TRUST_WEB_PORT"]
    wait_for(port, "/healthz", lambda status, body: status == 200)
    ready = wait_for(port, "/readyz", lambda status, body: status == 200)
    assert json.loads(ready) == {"ready": True, "config_version": 0}

    fleet = Fleet(topic_prefix)
    good = [fleet.record(f"did:mesh:m{i}", "output_quality", 0.9) for i in range(30)]
    good += [fleet.record(f"did:mesh:m{i}", "security_posture", 0.1) for i in range(3)]
    # Two critical signals: 375 after the first, 250 (revoked) after the second.
    revoking = [
        fleet.record("did:mesh:r", "policy_compliance", 0.0),
        fleet.record("did:mesh:r", "security_posture", 0.0),
    ]
    bad = [(signal_topic(topic_prefix, "output_quality"), b"did:mesh:x", b"not json")]
    await produce(kafka_bootstrap, good + revoking + bad)
    await consume(
        kafka_bootstrap,
        [f"{topic_prefix}trust.scores"],
        until=lambda r: len(r) >= 31,
        timeout=30,
        what="the updates",
    )

    text = wait_for(
        port,
        "/metrics",
        lambda status, body: status == 200 and "trust_windows_closed_total 31.0" in body,
    )
    assert metric(text, "trust_signals_applied_total", dimension="output_quality") == 30
    assert metric(text, "trust_signals_applied_total", dimension="security_posture") == 4
    assert metric(text, "trust_dead_letters_total") == 1
    assert metric(text, "trust_revocations_total") == 1
    assert metric(text, "trust_processing_latency_seconds_count") == 35
    # The revocation's latency, once Kafka confirmed it: from its signal's record timestamp.
    assert metric(text, "trust_revocation_latency_seconds_count") == 1
    assert 0 < metric(text, "trust_revocation_latency_seconds_sum") < 30
    assert metric(text, "trust_config_version") == 0
    assert "trust_consumer_lag{" in text
    # Garbage is collected on the worker's schedule (streams.gcpacing): young objects every
    # half second, and everything once as it starts, what survives frozen.
    assert metric(text, "trust_gc_collections_total", kind="young") >= 1
    assert metric(text, "trust_gc_collections_total", kind="full") == 1
    assert metric(text, "trust_gc_frozen_objects") > 10_000
    assert metric(text, "trust_gc_memory_blocks") > metric(text, "trust_gc_frozen_objects")
