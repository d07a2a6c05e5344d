"""The signal SDK against a real broker, and against a real worker reading what it publishes."""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.errors import TopicLayoutError
from streams.kafka.topicadmin import ensure_topics
from streams.messages import ScoreUpdate, Signal
from streams.scoring.model import DIMENSIONS, Dimension
from streams.sdk import (
    InvalidSignal,
    PublisherNotRunning,
    SignalPublisher,
    SyncSignalPublisher,
    partition_for,
)
from streams.settings import Settings
from tests.oracle import OracleAgent
from tests.support.kafka_io import Record, consume
from tests.support.signals import dedupe_updates, latest_update_per_agent, lifetime_signals

#: (topic, key) -> the signal bodies sent under that key to that topic, in send order.
Sent = dict[tuple[str, bytes], list[dict[str, Any]]]


def settings_for(bootstrap: str, prefix: str, partitions: int) -> Settings:
    return Settings(kafka_bootstrap_servers=bootstrap, topic_prefix=prefix, partitions=partitions)


async def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    """The end offset of each partition of ``topic``: how many records it has ever had."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        return {tp.partition: offset for tp, offset in (await consumer.end_offsets(tps)).items()}
    finally:
        # aiokafka 0.14: a consumer without a group, stopped before its internal task first ran,
        # re-raises that task's cancellation from stop(). The offsets are already read.
        with contextlib.suppress(asyncio.CancelledError):
            await consumer.stop()


def signal_topics(prefix: str) -> list[str]:
    return [f"{prefix}signals.{d.value}" for d in DIMENSIONS]


async def publish_fleet(
    publisher: SignalPublisher, agents: list[str], rng: random.Random
) -> list[tuple[str, str, float]]:
    """1 to 6 signals per agent, through every kind of call; (did, dimension, value) in order."""
    sent: list[tuple[str, str, float]] = []
    for did in agents:
        for _ in range(rng.randint(1, 6)):
            kind = rng.randrange(6)
            ok = rng.random() < 0.8
            if kind == 0:
                value = round(rng.uniform(0.3, 1.0), 3)
                dimension = rng.choice(DIMENSIONS).value
                await publisher.record_signal(
                    did, dimension, value, "sdk-test", signal_id=f"{did}#{len(sent)}"
                )
                sent.append((did, dimension, value))
            elif kind == 1:
                await publisher.record_policy_compliance(did, ok, "no-exfiltration")
                sent.append((did, "policy_compliance", 1.0 if ok else 0.0))
            elif kind == 2:
                used, compute = rng.randint(0, 4000), rng.randint(0, 400)
                await publisher.record_resource_usage(did, used, 2000, compute, 200)
                value = (min(1.0, 2000 / max(1, used)) + min(1.0, 200 / max(1, compute))) / 2
                sent.append((did, "resource_efficiency", value))
            elif kind == 3:
                await publisher.record_output_quality(did, ok, "billing", None if ok else "bad")
                sent.append((did, "output_quality", 1.0 if ok else 0.0))
            elif kind == 4:
                await publisher.record_security_event(did, ok, "egress")
                sent.append((did, "security_posture", 1.0 if ok else 0.0))
            else:
                await publisher.record_collaboration(did, ok, "did:mesh:peer-7")
                sent.append((did, "collaboration_health", 1.0 if ok else 0.0))
    return sent


def assert_placed_by_agent(
    records: list[Record], prefix: str, partitions: int, sent: list[tuple[str, str, float]]
) -> None:
    """Every signal arrived on its dimension's topic, keyed by its DID, on the DID's partition."""
    assert len(records) == len(sent)
    arrived: dict[tuple[str, str], list[float]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.topic, r.partition, r.offset)):
        body = Signal.model_validate_json(record.value or b"")
        assert body.dimension is not None
        assert record.topic == f"{prefix}signals.{body.dimension.value}"
        assert record.key == body.agent_did.encode("utf-8")
        assert record.partition == partition_for(body.agent_did, partitions), record
        arrived[(body.agent_did, body.dimension.value)].append(body.value)
    expected: dict[tuple[str, str], list[float]] = defaultdict(list)
    for did, dimension, value in sent:
        expected[(did, dimension)].append(value)
    # Same values in the same order: one agent's signals of one dimension share a partition.
    assert arrived == expected


async def test_signals_of_200_agents_land_keyed_on_the_partition_of_their_agent(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    partitions = 6
    await ensure_topics(settings_for(kafka_bootstrap, topic_prefix, partitions))
    agents = [f"did:mesh:sdk-fleet-{i:04d}" for i in range(200)]
    async with SignalPublisher(kafka_bootstrap, topic_prefix=topic_prefix) as publisher:
        sent = await publish_fleet(publisher, agents, random.Random(11))
        await publisher.flush()
    assert len({did for did, *_ in sent}) == 200
    assert len({dimension for _, dimension, _ in sent}) == 5

    records = await consume(
        kafka_bootstrap,
        signal_topics(topic_prefix),
        until=lambda r: len(r) >= len(sent),
        timeout=30,
        what=f"{len(sent)} signals",
    )
    assert_placed_by_agent(records, topic_prefix, partitions, sent)
    # 200 agents over 6 partitions: each partition has some, so placement was really exercised.
    assert {r.partition for r in records} == set(range(partitions))


async def test_the_worker_scores_every_agent_on_the_partition_its_signals_went_to(
    kafka_bootstrap: str, spawn_worker: Callable[..., Any], topic_prefix: str
) -> None:
    worker = spawn_worker(window_seconds="2", grace_seconds="1")
    worker.wait_until_assigned(timeout=120)
    partitions = int(worker.env["TRUST_PARTITIONS"])
    agents = [f"did:mesh:sdk-scored-{i:04d}" for i in range(200)]
    settings = settings_for(kafka_bootstrap, topic_prefix, partitions)
    async with SignalPublisher.from_settings(settings) as publisher:
        sent = await publish_fleet(publisher, agents, random.Random(23))

    per_agent: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for did, dimension, value in sent:
        per_agent[did].append((dimension, value))

    def every_agent_scored(records: list[Record]) -> bool:
        latest = latest_update_per_agent([r.json() for r in records])
        return all(
            did in latest and lifetime_signals(latest[did]) == len(signals)
            for did, signals in per_agent.items()
        )

    updates = await consume(
        kafka_bootstrap,
        [f"{topic_prefix}trust.scores"],
        until=every_agent_scored,
        timeout=90,
        what="score updates covering every signal of 200 agents",
    )
    signals = await consume(
        kafka_bootstrap,
        signal_topics(topic_prefix),
        until=lambda r: len(r) >= len(sent),
        timeout=30,
        what=f"{len(sent)} signals",
    )
    assert_placed_by_agent(signals, topic_prefix, partitions, sent)
    signal_partition = {r.key: r.partition for r in signals}

    bodies = [u.json() for u in updates]
    for record, body in zip(updates, bodies, strict=True):
        ScoreUpdate.model_validate(body)
        assert record.key == body["agent_did"].encode("utf-8")
        # The worker reads an agent's signals from a partition and publishes its scores on that
        # partition number; both must be the one murmur2 of the DID picks.
        assert record.partition == signal_partition[record.key], body["agent_did"]
        assert record.partition == partition_for(body["agent_did"], partitions)

    windows = dedupe_updates(bodies)
    latest = latest_update_per_agent(list(windows.values()))
    assert set(latest) == set(per_agent)
    in_windows: Counter[str] = Counter()
    for (did, _), body in windows.items():
        in_windows[did] += body["signals_in_window"]
    for did, agent_signals in per_agent.items():
        counts = Counter(dimension for dimension, _ in agent_signals)
        assert {
            d: latest[did]["dimensions"][d]["signal_count"] for d in latest[did]["dimensions"]
        } == {d.value: counts.get(d.value, 0) for d in DIMENSIONS}, did
        # Each signal is counted in exactly one window's update.
        assert in_windows[did] == len(agent_signals), did
        assert latest[did]["total_score"] == OracleAgent.replay(agent_signals).total_score, did

    assert (
        await end_offsets(kafka_bootstrap, f"{topic_prefix}signals.deadletter", partitions)
    ) == {p: 0 for p in range(partitions)}, "the worker dead-lettered a signal the SDK published"
    assert "Traceback" not in worker.log


async def test_leaving_the_block_on_an_error_still_delivers_what_was_accepted(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    await ensure_topics(settings_for(kafka_bootstrap, topic_prefix, 3))
    publisher = SignalPublisher(kafka_bootstrap, topic_prefix=topic_prefix, linger_ms=200)
    with pytest.raises(RuntimeError, match="the caller failed"):
        async with publisher:
            for i in range(20):
                await publisher.record_security_event(f"did:mesh:late-{i}", True, "login")
            raise RuntimeError("the caller failed")
    assert not publisher.running
    records = await consume(
        kafka_bootstrap,
        [f"{topic_prefix}signals.security_posture"],
        until=lambda r: len(r) >= 20,
        timeout=30,
        what="the 20 signals accepted before the error",
    )
    assert sorted(r.key for r in records) == sorted(
        f"did:mesh:late-{i}".encode() for i in range(20)
    )
    with pytest.raises(PublisherNotRunning, match="closed"):
        await publisher.record_security_event("did:mesh:late-0", True, "login")
    with pytest.raises(PublisherNotRunning, match="closed"):
        await publisher.start()


async def test_a_missing_topic_is_reported_as_a_layout_problem(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    async with SignalPublisher(
        kafka_bootstrap, topic_prefix=topic_prefix, request_timeout_ms=2000
    ) as publisher:
        with pytest.raises(TopicLayoutError, match=r"signals\.output_quality does not exist"):
            await publisher.record_output_quality("did:mesh:nowhere", True, "billing")


def test_the_sync_facade_publishes_flushes_and_refuses_bad_signals_in_the_callers_thread(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    partitions = 3
    settings = settings_for(kafka_bootstrap, topic_prefix, partitions)
    asyncio.run(ensure_topics(settings))
    when = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    sent: list[tuple[str, str, float]] = []
    with SyncSignalPublisher.from_settings(settings, client_id="sync-facade-test") as publisher:
        for i in range(30):
            did = f"did:mesh:sync-{i:03d}"
            publisher.record_signal(
                did, Dimension.OUTPUT_QUALITY, 0.75, "batch-job", timestamp=when
            )
            publisher.record_resource_usage(did, 300, 100, 10, 100)
            sent += [(did, "output_quality", 0.75), (did, "resource_efficiency", (1 / 3 + 1) / 2)]

        caller = threading.current_thread()
        with pytest.raises(InvalidSignal, match=r"^timestamp: .* has no time zone") as caught:
            publisher.record_signal(
                "did:mesh:sync-000", "output_quality", 0.5, "batch-job", timestamp=datetime.now()
            )
        assert threading.current_thread() is caller
        # Raised in this thread, not relayed from the loop thread through a future.
        assert not any("concurrent" in str(entry.path) for entry in caught.traceback)
        with pytest.raises(InvalidSignal, match=r"^compliant: "):
            publisher.record_policy_compliance("did:mesh:sync-000", "yes")  # type: ignore[arg-type]
        with pytest.raises(InvalidSignal, match=r"^dimension: "):
            publisher.record_signal("did:mesh:sync-000", "latency", 0.5, "batch-job")

        # Several threads at once; each thread's signals keep their order.
        def burst(t: int) -> list[tuple[str, str, float]]:
            mine = []
            for n in range(10):
                value = n / 10
                publisher.record_signal(f"did:mesh:thread-{t}", "collaboration_health", value, "x")
                mine.append((f"did:mesh:thread-{t}", "collaboration_health", value))
            return mine

        with ThreadPoolExecutor(4) as pool:
            for mine in pool.map(burst, range(4)):
                sent += mine
        publisher.flush()
        # Acknowledged means readable: the flush is done before we start reading.
        ends = asyncio.run(
            end_offsets(kafka_bootstrap, f"{topic_prefix}signals.output_quality", partitions)
        )
        assert sum(ends.values()) == 30

    records = asyncio.run(
        consume(
            kafka_bootstrap,
            signal_topics(topic_prefix),
            until=lambda r: len(r) >= len(sent),
            timeout=30,
            what=f"{len(sent)} signals from the sync facade",
        )
    )
    assert_placed_by_agent(records, topic_prefix, partitions, sent)
    timestamps = {
        orjson.loads(r.value or b"").get("timestamp")
        for r in records
        if "output_quality" in r.topic
    }
    assert timestamps == {"2026-03-01T09:00:00Z"}

    publisher.close()  # closing twice does nothing
    with pytest.raises(PublisherNotRunning):
        publisher.record_policy_compliance("did:mesh:sync-000", True)
    assert not any(t.name == "sync-facade-test-loop" for t in threading.enumerate())


def test_the_sync_facade_fails_in_the_constructor_when_no_broker_answers() -> None:
    with pytest.raises(Exception) as caught:
        SyncSignalPublisher("127.0.0.1:1", request_timeout_ms=2000, client_id="no-broker-test")
    assert "127.0.0.1:1" in str(caught.value) or "connect" in str(caught.value).lower()
    assert not any(t.name == "no-broker-test-loop" for t in threading.enumerate())
