"""Confirmed delivery: outputs and changelog records are retried until Kafka has them, in order,
never skipped and never fatal; the health the readiness check and metrics show follows."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

from streams.kafka.delivery import (
    Delivery,
    DeliveryHealth,
    Outgoing,
    ProducerLane,
    Retrying,
    acknowledged,
)
from streams.state.store import StateStore
from tests.support.fake_kafka import FakeProducer, Metadata


class Sleeps:
    """Records the waits between tries, and fixes the cause after a number of them."""

    def __init__(self, producer: FakeProducer, fix_after: int) -> None:
        self.producer = producer
        self.fix_after = fix_after
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        if len(self.delays) >= self.fix_after:
            self.producer.refusing.clear()
            self.producer.refuse_at_send = None


def outgoing(topic: str, n: int) -> list[Outgoing]:
    return [Outgoing(topic, f"k{i}".encode(), f"v{i}".encode(), 0) for i in range(n)]


async def test_delivered_records_return_at_once_and_leave_health_clear() -> None:
    producer = FakeProducer()
    health = DeliveryHealth()
    sleeps = Sleeps(producer, fix_after=1)
    delivery = Delivery(lambda: producer, Retrying(health, sleep=sleeps))
    await delivery.send(outgoing("scores", 3))
    assert [r[2] for r in producer.stored] == [b"v0", b"v1", b"v2"]
    assert sleeps.delays == []
    assert health.blocked == {} and not health.failures


async def test_a_refused_topic_is_retried_with_growing_waits_until_it_accepts() -> None:
    producer = FakeProducer()
    producer.refusing["deadletter"] = MessageSizeTooLargeError("record too large")
    health = DeliveryHealth()
    seen_blocked: list[list[str]] = []

    async def sleep(seconds: float) -> None:
        seen_blocked.append(health.describe_blocked())
        await sleeps(seconds)

    sleeps = Sleeps(producer, fix_after=4)
    delivery = Delivery(
        lambda: producer, Retrying(health, retry_initial=0.5, retry_max=2.0, sleep=sleep)
    )
    await delivery.send([*outgoing("deadletter", 2), *outgoing("scores", 1)])
    assert sleeps.delays == [0.5, 1.0, 2.0, 2.0]
    assert health.failures["deadletter"] == 4
    assert all("deadletter" in text[0] and "too large" in text[0] for text in seen_blocked)
    # Cleared once it works; the refused records stored once, in order. The score after them
    # reached Kafka on every try (byte-identical repeats), and once more after them.
    assert health.blocked == {}
    stored = [(t, v) for t, _, v, _ in producer.stored]
    assert [r for r in stored if r[0] == "deadletter"] == [
        ("deadletter", b"v0"),
        ("deadletter", b"v1"),
    ]
    assert stored[-3:] == [("deadletter", b"v0"), ("deadletter", b"v1"), ("scores", b"v0")]
    assert set(stored[:-3]) == {("scores", b"v0")}


async def test_records_after_the_first_failure_go_again_in_order() -> None:
    producer = FakeProducer()
    producer.refusing["revocations"] = KafkaTimeoutError()
    health = DeliveryHealth()
    delivery = Delivery(lambda: producer, Retrying(health, sleep=Sleeps(producer, fix_after=1)))
    records = [*outgoing("scores", 1), *outgoing("revocations", 1), *outgoing("scores", 1)]
    await delivery.send(records)
    # The score before the failure once; the revocation and the score after it again: the
    # score after it reached Kafka twice (a byte-identical repeat), never out of order.
    assert [t for t, *_ in producer.stored] == ["scores", "scores", "revocations", "scores"]


async def test_a_record_refused_at_send_time_is_retried_too() -> None:
    producer = FakeProducer()
    producer.refuse_at_send = MessageSizeTooLargeError("over max_request_size")
    health = DeliveryHealth()
    sleeps = Sleeps(producer, fix_after=2)
    delivery = Delivery(lambda: producer, Retrying(health, sleep=sleeps))
    await delivery.send(outgoing("scores", 2))
    assert len(sleeps.delays) == 2
    assert [v for *_, v, _ in producer.stored] == [b"v0", b"v1"]


async def test_cancelling_a_blocked_delivery_stops_it_without_storing_anything() -> None:
    producer = FakeProducer()
    producer.refusing["scores"] = KafkaTimeoutError()
    health = DeliveryHealth()
    delivery = Delivery(lambda: producer, Retrying(health, retry_initial=0.01))
    task = asyncio.ensure_future(delivery.send(outgoing("scores", 1)))
    await asyncio.sleep(0.1)
    assert not task.done() and health.blocked
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert producer.stored == []


async def test_the_store_sends_refused_changelog_batches_again_with_current_values(
    tmp_path: Path,
) -> None:
    producer = FakeProducer()
    producer.refusing["changelog"] = KafkaTimeoutError()
    health = DeliveryHealth()
    sleeps = Sleeps(producer, fix_after=2)
    store = StateStore(
        state_dir=tmp_path,
        changelog_topic="changelog",
        producer=lambda: producer,
        delivery=Retrying(health, sleep=sleeps),
    )
    await store.write(0, [(b"did:a:1", b"first"), (b"did:a:2", b"x")])
    # Written again before the first write was confirmed: the resend must carry this value.
    await store.write(0, [(b"did:a:1", b"second")])
    await store.confirm()
    assert len(sleeps.delays) == 2 and health.failures["changelog"] == 2
    assert health.blocked == {}
    stored = {key: value for _, key, value, _ in producer.stored}
    assert stored == {b"did:a:1": b"second", b"did:a:2": b"x"}
    # Nothing left to confirm: a second confirm returns without sending anything.
    before = len(producer.stored)
    await store.confirm()
    assert len(producer.stored) == before


async def test_confirm_waits_for_writes_another_confirm_took(tmp_path: Path) -> None:
    producer = FakeProducer()
    producer.refusing["changelog"] = KafkaTimeoutError()
    health = DeliveryHealth()
    release = asyncio.Event()

    async def sleep(seconds: float) -> None:
        await release.wait()
        producer.refusing.clear()

    store = StateStore(
        state_dir=tmp_path,
        changelog_topic="changelog",
        producer=lambda: producer,
        delivery=Retrying(health, sleep=sleep),
    )
    await store.write(0, [(b"did:a:1", b"v")])
    first = asyncio.ensure_future(store.confirm())
    await asyncio.sleep(0.01)
    second = asyncio.ensure_future(store.confirm())
    await asyncio.sleep(0.01)
    # The second caller's records were taken by the first confirm: it must not return early.
    assert not first.done() and not second.done()
    release.set()
    await asyncio.gather(first, second)
    assert [key for _, key, _, _ in producer.stored] == [b"did:a:1"]


async def test_acknowledgements_outstanding_past_patience_show_as_blocked() -> None:
    producer = FakeProducer()
    health = DeliveryHealth()
    delivery = Delivery(lambda: producer, Retrying(health), patience=0.05)
    never: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def send(topic: str, value: bytes | None, *, key: bytes | None, partition: int) -> Any:
        return never  # the producer retries by itself (a deleted topic): no answer either way

    producer.send = send  # type: ignore[method-assign]
    task = asyncio.ensure_future(delivery.send(outgoing("deadletter", 1)))
    await asyncio.sleep(0.12)
    assert not task.done()
    assert "no acknowledgement" in health.blocked["deadletter"][1]
    assert not health.failures  # waiting is not failing
    never.set_result(Metadata(0))
    await task
    assert health.blocked == {}


async def test_acknowledged_reports_what_is_still_waiting() -> None:
    loop = asyncio.get_running_loop()
    slow: asyncio.Future[Any] = loop.create_future()
    fast: asyncio.Future[Any] = loop.create_future()
    fast.set_result("stored")
    stalls: list[tuple[float, int]] = []
    loop.call_later(0.12, slow.set_exception, KafkaTimeoutError())
    results = await acknowledged(
        [fast, slow], lambda seconds, waiting: stalls.append((seconds, len(waiting))), patience=0.05
    )
    assert results[0] == "stored" and isinstance(results[1], KafkaTimeoutError)
    assert len(stalls) == 2 and all(n == 1 for _, n in stalls)
    assert slow.done() and not slow.cancelled()


class StartingProducer(FakeProducer):
    """A producer whose start fails until ``refusals`` starts have been tried."""

    def __init__(self, attempts: list[str], refusals: int) -> None:
        super().__init__()
        self.attempts = attempts
        self.refusals = refusals
        self.stopped = False

    async def start(self) -> None:
        self.attempts.append("start")
        if len(self.attempts) <= self.refusals:
            raise KafkaTimeoutError("no broker")

    async def stop(self) -> None:
        self.stopped = True


async def test_a_lane_topic_goes_through_its_own_producer_once_started() -> None:
    main, attempts = FakeProducer(), []
    lane_producer = StartingProducer(attempts, refusals=0)
    lane = ProducerLane(lambda: lane_producer, name="revocations")
    delivery = Delivery(lambda: main, Retrying(DeliveryHealth()), lanes={"revocations": lane})
    # Not started yet: the main producer serves, nothing waits for the lane.
    await delivery.send(outgoing("revocations", 1))
    assert [r[0] for r in main.stored] == ["revocations"] and lane_producer.stored == []
    await lane.run()
    await delivery.send(
        [*outgoing("scores", 2), *outgoing("revocations", 2), *outgoing("scores", 1)]
    )
    assert [r[0] for r in main.stored] == ["revocations", "scores", "scores", "scores"]
    assert [(r[0], r[2]) for r in lane_producer.stored] == [
        ("revocations", b"v0"),
        ("revocations", b"v1"),
    ]
    await lane.stop()
    assert lane_producer.stopped and lane() is None


def refusing_lane(
    refusals: int, retry_seconds: float
) -> tuple[ProducerLane, list[str], list[StartingProducer]]:
    """A lane whose producers refuse to start ``refusals`` times in all; (lane, every start
    tried, every producer built)."""
    attempts: list[str] = []
    built: list[StartingProducer] = []

    def build() -> StartingProducer:
        built.append(StartingProducer(attempts, refusals=refusals))
        return built[-1]

    return ProducerLane(build, name="revocations", retry_seconds=retry_seconds), attempts, built


async def test_a_lane_producer_that_cannot_start_is_tried_again() -> None:
    lane, attempts, built = refusing_lane(refusals=2, retry_seconds=0.001)
    await lane.run()
    assert attempts == ["start", "start", "start"]
    # Each failed producer is stopped (its connections closed), and the third one serves.
    assert [p.stopped for p in built] == [True, True, False]
    assert lane() is built[-1]


async def test_a_lane_stopped_while_it_retries_starts_nothing_more() -> None:
    lane, attempts, built = refusing_lane(refusals=1_000, retry_seconds=0.01)
    running = asyncio.ensure_future(lane.run())
    await asyncio.sleep(0.035)
    await lane.stop()
    await asyncio.wait_for(running, 1.0)
    tried = len(attempts)
    await asyncio.sleep(0.05)
    assert len(attempts) == tried and lane() is None
    assert all(p.stopped for p in built)
