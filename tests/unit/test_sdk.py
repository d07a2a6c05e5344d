"""The signal SDK without a broker: what it refuses, what it would send, and where it would go."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner

from streams.errors import TrustServiceError
from streams.messages import Signal
from streams.processing.intake import AcceptedSignal, read_signal
from streams.scoring.model import DIMENSION_INDEX, DIMENSIONS, Dimension
from streams.sdk import (
    InvalidSignal,
    PreparedSignal,
    PublisherNotRunning,
    PublishFailed,
    SignalPublisher,
    collaboration_signal,
    output_quality_signal,
    partition_for,
    policy_compliance_signal,
    prepare_signal,
    resource_usage_signal,
    security_event_signal,
)
from streams.settings import Settings

DID = "did:mesh:agent-42"


def body(signal: PreparedSignal) -> dict[str, Any]:
    decoded: dict[str, Any] = orjson.loads(signal.value)
    return decoded


def worker_reads(signal: PreparedSignal) -> AcceptedSignal:
    """What the worker's own intake makes of the record, on the topic of its dimension."""
    accepted = read_signal(
        DIMENSION_INDEX[signal.dimension.value], signal.key, signal.value, 1_700_000_000_000, 65536
    )
    assert isinstance(accepted, AcceptedSignal), accepted
    return accepted


# -- validation -----------------------------------------------------------------------------------

BAD_SIGNALS: list[tuple[str, dict[str, Any], str, str]] = [
    ("no DID scheme", {"agent_did": "agent-7"}, "agent_did", "is not a DID"),
    ("DID ends in a colon", {"agent_did": "did:mesh:agent:"}, "agent_did", "is not a DID"),
    ("empty DID", {"agent_did": ""}, "agent_did", "is not a DID"),
    ("DID not a string", {"agent_did": 42}, "agent_did", "valid string"),
    ("DID too long", {"agent_did": "did:mesh:" + "a" * 600}, "agent_did", "at most 512"),
    ("value above 1", {"value": 1.5}, "value", "from 0.0 (bad) to 1.0 (good), got 1.5"),
    ("value below 0", {"value": -0.01}, "value", "got -0.01"),
    ("NaN", {"value": math.nan}, "value", "got nan"),
    ("infinity", {"value": math.inf}, "value", "got inf"),
    ("bool value", {"value": True}, "value", "not a bool True"),
    ("text value", {"value": "0.5"}, "value", "not str '0.5'"),
    ("empty source", {"source": ""}, "source", "at least 1 character"),
    ("blank source", {"source": "   "}, "source", "source must not be blank"),
    ("source too long", {"source": "s" * 257}, "source", "at most 256"),
    ("unknown dimension", {"dimension": "vibes"}, "dimension", "'vibes' is not one of"),
    ("dimension not text", {"dimension": 3}, "dimension", "3 is not one of"),
    (
        "naive timestamp",
        {"timestamp": datetime(2026, 1, 1, 12, 0)},
        "timestamp",
        "has no time zone",
    ),
    ("timestamp as text", {"timestamp": "2026-01-01T00:00:00Z"}, "timestamp", "aware datetime"),
    ("details too long", {"details": "d" * 8193}, "details", "at most 8192"),
    ("trace id too long", {"trace_id": "t" * 257}, "trace_id", "at most 256"),
]


def good_args(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "agent_did": DID,
        "dimension": "output_quality",
        "value": 0.5,
        "source": "unit-test",
    }
    args.update(overrides)
    return args


@pytest.mark.parametrize(
    ("overrides", "field", "problem"),
    [case[1:] for case in BAD_SIGNALS],
    ids=[case[0] for case in BAD_SIGNALS],
)
async def test_an_invalid_signal_is_refused_before_anything_is_sent(
    overrides: dict[str, Any], field: str, problem: str
) -> None:
    with pytest.raises(InvalidSignal) as caught:
        prepare_signal(**good_args(**overrides))
    assert caught.value.field == field
    assert problem in str(caught.value)
    assert str(caught.value).startswith(f"{field}: ")

    # A publisher that was never started fails a valid signal with PublisherNotRunning, which
    # is raised where sending begins; an invalid one fails earlier, before sending is reached.
    publisher = SignalPublisher("127.0.0.1:1")
    with pytest.raises(InvalidSignal):
        await publisher.record_signal(**good_args(**overrides))
    with pytest.raises(PublisherNotRunning):
        await publisher.record_signal(**good_args())


def test_invalid_signal_is_a_value_error_and_a_service_error() -> None:
    with pytest.raises(ValueError, match="agent_did"):
        prepare_signal(**good_args(agent_did="nope"))
    assert issubclass(InvalidSignal, TrustServiceError)


def test_every_broken_field_is_named_with_the_first_first() -> None:
    with pytest.raises(InvalidSignal) as caught:
        prepare_signal(**good_args(agent_did="nope", value=2.0, source=""))
    assert caught.value.field == "agent_did"
    assert "also value:" in str(caught.value)
    assert "source:" in str(caught.value)


def test_an_aware_timestamp_is_written_in_utc_with_a_z() -> None:
    cest = timezone(timedelta(hours=2))
    when = datetime(2026, 6, 1, 14, 30, 15, 123456, tzinfo=cest)
    signal = prepare_signal(**good_args(timestamp=when))
    assert body(signal)["timestamp"] == "2026-06-01T12:30:15.123456Z"
    assert Signal.model_validate_json(signal.value).timestamp == when
    assert worker_reads(signal).timestamp_ms == round(when.timestamp() * 1000)


@pytest.mark.parametrize("dimension", [*DIMENSIONS, *(d.value for d in DIMENSIONS)])
def test_the_body_is_a_valid_signal_that_the_worker_accepts(dimension: Dimension | str) -> None:
    signal = prepare_signal(
        DID,
        dimension,
        1,
        "unit-test",
        details="détails ✓",
        trace_id="trace-1",
        signal_id="sig-1",
        timestamp=datetime(2026, 1, 1, tzinfo=UTC),
    )
    assert signal.key == DID.encode("utf-8")
    assert signal.dimension == Dimension(dimension)
    parsed = Signal.model_validate_json(signal.value)
    assert parsed.agent_did == DID
    assert parsed.dimension == Dimension(dimension)
    assert body(signal) == {
        "agent_did": DID,
        "value": 1.0,
        "source": "unit-test",
        "dimension": Dimension(dimension).value,
        "details": "détails ✓",
        "trace_id": "trace-1",
        "signal_id": "sig-1",
        "timestamp": "2026-01-01T00:00:00Z",
    }
    assert isinstance(body(signal)["value"], float)
    accepted = worker_reads(signal)
    assert (accepted.agent_did, accepted.value, accepted.signal_id) == (DID, 1.0, "sig-1")


def test_absent_optional_fields_are_left_out_so_the_worker_uses_the_record_time() -> None:
    signal = prepare_signal(DID, Dimension.SECURITY_POSTURE, 0.0, "unit-test")
    assert body(signal) == {
        "agent_did": DID,
        "value": 0.0,
        "source": "unit-test",
        "dimension": "security_posture",
    }
    assert worker_reads(signal).timestamp_ms == 1_700_000_000_000


def test_a_did_with_non_ascii_escapes_is_keyed_by_its_exact_utf8_bytes() -> None:
    did = "did:web:example.com:%C3%A9t%C3%A9:agent_1"
    signal = prepare_signal(did, "policy_compliance", 0.9, "unit-test")
    assert signal.key == did.encode("utf-8")
    assert worker_reads(signal).agent_did == did


# -- the convenience calls keep the reference engine's meaning ------------------------------------


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        ((100, 200, 50, 100), 1.0),  # well within both budgets
        ((200, 200, 100, 100), 1.0),  # exactly on budget
        ((400, 200, 100, 100), 0.75),  # tokens at twice the budget
        ((400, 200, 400, 100), 0.375),  # tokens 2x, compute 4x
        ((0, 0, 0, 0), 0.0),  # zero budgets, nothing used: max(1, used) keeps it defined
        ((0, 10, 0, 10), 1.0),
        ((1_000_000, 1, 1_000_000, 1), 1e-6),
    ],
)
def test_resource_efficiency_values(usage: tuple[int, int, int, int], expected: float) -> None:
    signal = resource_usage_signal(DID, *usage)
    tokens_used, tokens_budget, compute_ms, compute_budget_ms = usage
    assert signal.dimension is Dimension.RESOURCE_EFFICIENCY
    assert body(signal)["value"] == pytest.approx(expected, abs=1e-12)
    assert body(signal)["source"] == "resource_monitor"
    assert body(signal)["details"] == (
        f"tokens={tokens_used}/{tokens_budget}, compute={compute_ms}/{compute_budget_ms}ms"
    )
    worker_reads(signal)


@pytest.mark.parametrize(
    ("name", "bad"),
    [("tokens_used", -1), ("tokens_budget", 1.5), ("compute_ms", True), ("compute_budget_ms", "9")],
)
def test_resource_usage_takes_non_negative_integers(name: str, bad: object) -> None:
    usage: dict[str, Any] = {
        "tokens_used": 1,
        "tokens_budget": 1,
        "compute_ms": 1,
        "compute_budget_ms": 1,
    }
    usage[name] = bad
    with pytest.raises(InvalidSignal, match=f"^{name}: must be a non-negative integer"):
        resource_usage_signal(DID, **usage)


def test_convenience_calls_use_the_reference_values_sources_and_details() -> None:
    cases = [
        (policy_compliance_signal(DID, True, "pii"), "policy_compliance", 1.0, "policy_engine"),
        (policy_compliance_signal(DID, False), "policy_compliance", 0.0, "policy_engine"),
        (output_quality_signal(DID, True, "billing"), "output_quality", 1.0, "consumer:billing"),
        (
            output_quality_signal(DID, False, "billing", "schema mismatch"),
            "output_quality",
            0.0,
            "consumer:billing",
        ),
        (
            security_event_signal(DID, False, "egress_blocked"),
            "security_posture",
            0.0,
            "security_monitor",
        ),
        (
            collaboration_signal(DID, True, "did:mesh:peer-1"),
            "collaboration_health",
            1.0,
            "collaboration:did:mesh:peer-1",
        ),
    ]
    for signal, dimension, value, source in cases:
        sent = body(signal)
        assert (signal.dimension.value, sent["value"], sent["source"]) == (dimension, value, source)
        assert sent["dimension"] == dimension
        worker_reads(signal)
    details = [body(signal).get("details") for signal, *_ in cases]
    assert details == ["Policy: pii", None, None, "schema mismatch", "egress_blocked", None]


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: policy_compliance_signal(DID, "yes"), "compliant"),  # type: ignore[arg-type]
        (lambda: policy_compliance_signal(DID, 1), "compliant"),  # type: ignore[arg-type]
        (lambda: output_quality_signal(DID, None, "c"), "accepted"),  # type: ignore[arg-type]
        (lambda: output_quality_signal(DID, True, " "), "consumer"),
        (lambda: security_event_signal(DID, True, ""), "event_type"),
        (lambda: security_event_signal(DID, 0, "x"), "within_boundary"),  # type: ignore[arg-type]
        (lambda: collaboration_signal(DID, True, "peer-1"), "peer_did"),
        (lambda: collaboration_signal(DID, "ok", "did:m:p"), "handoff_successful"),  # type: ignore[arg-type]
        (lambda: collaboration_signal("peer-1", True, "did:m:p"), "agent_did"),
        (lambda: output_quality_signal(DID, True, "c" * 300), "source"),
    ],
)
def test_convenience_calls_refuse_wrong_arguments_by_name(build: Any, field: str) -> None:
    with pytest.raises(InvalidSignal) as caught:
        build()
    assert caught.value.field == field


# -- placement ------------------------------------------------------------------------------------

#: Computed with Kafka's Java client 4.4:
#: Utils.toPositive(Utils.murmur2(did.getBytes(UTF_8))) % 1000.
JAVA_PARTITIONS_OF_1000 = {
    "did:mesh:agent-42": 486,
    "did:mesh:sdk-0": 484,
    "did:web:example.com:agents:alpha": 449,
    "did:mesh:%C3%A9t%C3%A9": 758,
    "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK": 922,
}


@pytest.mark.parametrize(("did", "expected"), JAVA_PARTITIONS_OF_1000.items())
def test_placement_agrees_with_the_java_client(did: str, expected: int) -> None:
    assert partition_for(did, 1000) == expected
    everything = list(range(1000))
    # The partitioner the producer is built with makes the same choice from the record's key.
    assert DefaultPartitioner()(did.encode(), everything, everything) == expected
    for count in (1, 3, 6, 7):
        assert partition_for(did, count) == DefaultPartitioner()(
            did.encode(), list(range(count)), list(range(count))
        )


def test_partition_for_needs_at_least_one_partition() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        partition_for(DID, 0)


# -- the publisher's configuration ----------------------------------------------------------------


@pytest.mark.parametrize(
    "option", ["partitioner", "acks", "enable_idempotence", "key_serializer", "transactional_id"]
)
def test_options_the_contract_fixes_cannot_be_overridden(option: str) -> None:
    with pytest.raises(ValueError, match=option):
        SignalPublisher("127.0.0.1:1", **{option: None})


def test_from_settings_takes_the_workers_brokers_prefix_and_size_limit() -> None:
    settings = Settings(
        kafka_bootstrap_servers="kafka-1:9092,kafka-2:9092",
        topic_prefix="prod.",
        max_message_bytes=2048,
    )
    publisher = SignalPublisher.from_settings(settings, linger_ms=20)
    assert publisher.topic_prefix == "prod."
    assert [publisher.topic_for(d) for d in DIMENSIONS] == [
        f"prod.signals.{d.value}" for d in DIMENSIONS
    ]
    with pytest.raises(InvalidSignal, match="dimension"):
        publisher.topic_for("vibes")
    # A signal the worker would dead-letter for its size fails here instead.
    big = prepare_signal(DID, "output_quality", 0.5, "unit-test", details="x" * 4000)
    with pytest.raises(InvalidSignal, match="over the worker's limit of 2048"):
        publisher.check_size(big)
    publisher.check_size(prepare_signal(DID, "output_quality", 0.5, "unit-test"))


async def test_a_publisher_that_is_not_running_says_so() -> None:
    publisher = SignalPublisher("127.0.0.1:1")
    assert not publisher.running
    with pytest.raises(PublisherNotRunning, match="not started"):
        await publisher.flush()
    with pytest.raises(PublisherNotRunning, match="not started"):
        await publisher.record_policy_compliance(DID, True)
    await publisher.stop()  # stopping what never started does nothing


def test_publish_failed_names_the_count_and_the_first_error() -> None:
    failure = PublishFailed([TimeoutError("no ack"), OSError("gone")])
    assert "2 signal(s)" in str(failure)
    assert "TimeoutError: no ack" in str(failure)
    assert len(failure.failures) == 2
    assert isinstance(failure, TrustServiceError)
