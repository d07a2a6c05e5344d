"""The revocation latency operators watch: seconds from a revoking critical signal's record
timestamp until Kafka confirmed its revocation, observed once per revocation, never for one
published again (a redelivered signal), never before the confirmation."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
from aiokafka.errors import KafkaTimeoutError
from prometheus_client import CollectorRegistry, generate_latest

from streams.kafka.topics import TopicNames
from streams.processing.pipeline import ScoringPipeline
from streams.scoring.model import DEFAULT_WEIGHTS, ScoringConfig
from streams.scoring.windows import WindowPolicy
from streams.web.observability import LatencyHistogram
from tests.support.fake_kafka import FakeMessage, FakeProducer
from tests.support.unit_pipeline import unit_pipeline

NAMES = TopicNames("revlat.")
CONFIG = ScoringConfig.validated(DEFAULT_WEIGHTS, 300, 500)
#: How long before the test's start the signals were stamped by their producer.
STAMPED_AGO_S = 2.0


def _signals(stamped_ms: int) -> list[FakeMessage]:
    """did:x:falling gets 0.0 on policy compliance (critical, total 375), then on security
    posture (critical, total 250: revoked); did:x:steady only good signals."""
    rows = [
        (0, "did:x:steady", 0.9),
        (0, "did:x:falling", 0.0),
        (3, "did:x:steady", 0.8),
        (3, "did:x:falling", 0.0),
    ]
    offsets = [0] * len(NAMES.signals)
    messages = []
    for dimension, did, value in rows:
        body = orjson.dumps({"agent_did": did, "value": value, "source": "test"})
        topic = NAMES.signals[dimension]
        messages.append(FakeMessage(topic, 0, offsets[dimension], did.encode(), body, stamped_ms))
        offsets[dimension] += 1
    return messages


def _pipeline(tmp_path: Path, producer: FakeProducer) -> tuple[ScoringPipeline, list[float]]:
    pipeline = unit_pipeline(
        tmp_path,
        producer,
        names=NAMES,
        windows=WindowPolicy(size_ms=30_000, grace_ms=5_000),
        config=CONFIG,
        now_ms=round(time.time() * 1000),
    )
    observed: list[float] = []
    pipeline.observe_revocation = observed.append
    return pipeline, observed


async def test_a_revocation_is_observed_once_from_its_signals_timestamp(tmp_path: Path) -> None:
    producer = FakeProducer()
    pipeline, observed = _pipeline(tmp_path, producer)
    started = time.time()
    await pipeline.process_records(_signals(round((started - STAMPED_AGO_S) * 1000)))
    assert [k for k, _, _ in producer.on(NAMES.revocations)] == [b"did:x:falling"]
    assert len(observed) == 1
    assert STAMPED_AGO_S - 0.01 <= observed[0] <= STAMPED_AGO_S + (time.time() - started) + 0.01
    pipeline.store.databases.close()


async def test_the_latency_counts_until_kafka_confirms_and_not_before(tmp_path: Path) -> None:
    producer = FakeProducer()
    producer.refusing[NAMES.revocations] = KafkaTimeoutError()
    pipeline, observed = _pipeline(tmp_path, producer)
    started = time.time()
    run = asyncio.ensure_future(
        pipeline.process_records(_signals(round((started - STAMPED_AGO_S) * 1000)))
    )
    await asyncio.sleep(0.3)
    assert not run.done()
    assert observed == []  # refused: not published yet, so not observed
    producer.refusing.clear()
    await asyncio.wait_for(run, 10)
    assert len(observed) == 1
    assert observed[0] >= STAMPED_AGO_S + 0.3  # the time Kafka refused it counts
    pipeline.store.databases.close()


async def test_a_revocation_published_again_is_not_observed_again(tmp_path: Path) -> None:
    producer = FakeProducer()
    pipeline, observed = _pipeline(tmp_path, producer)
    signals = _signals(round((time.time() - STAMPED_AGO_S) * 1000))
    await pipeline.process_records(signals)
    assert len(observed) == 1
    # The same records delivered again (as after a crash): the revocation they recorded is
    # published again, as the same bytes, but it is not a new one.
    await pipeline.process_records(signals)
    revocations = producer.on(NAMES.revocations)
    assert len(revocations) == 2 and len({v for _, v, _ in revocations}) == 1
    assert len(observed) == 1
    pipeline.store.databases.close()


def test_the_histogram_is_exported_under_its_own_name() -> None:
    registry = CollectorRegistry()
    histogram = LatencyHistogram("trust_revocation_latency_seconds", "Revocation latency")
    registry.register(histogram)
    histogram.observe(0.02)
    histogram.observe(0.3)
    text = generate_latest(registry).decode()
    assert 'trust_revocation_latency_seconds_bucket{le="0.025"} 1.0' in text
    assert 'trust_revocation_latency_seconds_bucket{le="0.5"} 2.0' in text
    assert "trust_revocation_latency_seconds_count 2.0" in text
    assert "trust_processing_latency_seconds" not in text
