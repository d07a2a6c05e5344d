"""schemathesis against the running service's own OpenAPI document: no server errors, and every
response conforms to the document."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.kafka_io import consume, produce
from tests.support.signals import Fleet

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


async def test_api_conforms_to_its_openapi_document(  # type: ignore[no-untyped-def]
    kafka_bootstrap: str, spawn_worker, topic_prefix: str
) -> None:
    worker = spawn_worker(window_seconds="2", grace_seconds="1", admin_token="token")
    worker.wait_until_assigned(timeout=120)
    # Agents with history, at risk and revoked, so responses have content to check.
    fleet = Fleet(topic_prefix)
    records = [fleet.record(f"did:mesh:probe-{i}", "output_quality", 0.9) for i in range(5)]
    records += [fleet.record("did:mesh:probe-0", d, 0.0) for d in ("security_posture",) * 2]
    records += [fleet.record("did:mesh:probe-1", "policy_compliance", 0.0)]
    records += [fleet.record("did:mesh:probe-1", "security_posture", 0.0)]
    await produce(kafka_bootstrap, records)
    await consume(
        kafka_bootstrap,
        [f"{topic_prefix}trust.scores"],
        until=lambda r: len(r) >= 5,
        timeout=30,
        what="the probes' updates",
    )
    worker.wait_until_ready()
    base = worker.base_url

    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    # /events never ends (the dashboard's stream; tests/integration/test_dashboard.py reads it).
    assert "/events" in {operation.path for operation in operations}
    operations = [operation for operation in operations if operation.path != "/events"]
    assert len(operations) == 10  # the 7 of the API, the probes and metrics (not the document)
    calls: list[int] = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
        def conforms(case) -> None:  # type: ignore[no-untyped-def]
            case.call_and_validate(checks=CHECKS)
            calls.append(1)

        conforms()
    assert len(calls) >= 10 * 10, f"only {len(calls)} requests were made"
    assert "Traceback" not in worker.log
