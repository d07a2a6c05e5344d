"""Broker faults never stop a worker: it waits, says so in /readyz and /metrics, and catches up.

Every fault is injected into a private broker (``deploy/local/kafka`` with its own folder and
ports), never into the session's shared one: the broker killed mid-stream, the broker stopped for
a minute, and the dead-letter topic refusing every record while bad signals keep arriving. In each
the worker process must stay the same, and afterwards every agent's score must be the oracle's,
every revocation published once (a repeat only byte for byte), and every bad record dead-lettered.
"""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from tests.support.admin import delete_topics, set_topic_settings, topic_setting
from tests.support.hostile import Hostile, letter_position, produce_to
from tests.support.kafka_io import create_topics, produce
from tests.support.outcomes import (
    assert_final_scores,
    assert_revocations_exact,
    read_to_end,
    steady_stream,
)
from tests.support.private_broker import PrivateBroker
from tests.support.signals import DIMENSIONS, Fleet, signal_topic
from tests.support.web import metric_sum, poll_page, try_get, wait_for_page
from tests.support.worker import WorkerProcess

#: Checkpoints every 2 s, so that several come due during each fault below.
SETTINGS = {
    "window_seconds": "2",
    "grace_seconds": "1",
    "partitions": "3",
    "state_flush_seconds": "2",
}


def _same_worker(worker: WorkerProcess, pid: int, when: str) -> None:
    if not worker.running() or worker.process is None or worker.process.pid != pid:
        raise AssertionError(
            f"the worker did not survive {when} (exit {worker.returncode()}):\n{worker.log[-6000:]}"
        )


async def _watch_readiness(worker: WorkerProcess, pid: int, seconds: float) -> list[int | None]:
    """/readyz statuses over ``seconds`` (None: no answer); the worker must live throughout."""
    seen: list[int | None] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        _same_worker(worker, pid, "the outage")
        answer = try_get(worker.base_url, "/readyz", timeout=2)
        seen.append(None if answer is None else answer[0])
        await asyncio.sleep(0.5)
    return seen


async def _start_worker(spawn_worker, broker: PrivateBroker) -> tuple[WorkerProcess, int]:  # type: ignore[no-untyped-def]
    broker.start()
    worker = spawn_worker(kafka_bootstrap_servers=broker.address, **SETTINGS)
    worker.wait_until_ready(timeout=120)
    assert worker.process is not None
    return worker, worker.process.pid


async def _outage_then_recovery(
    worker: WorkerProcess,
    pid: int,
    broker: PrivateBroker,
    prefix: str,
    fault: str,
    down_seconds: float,
) -> None:
    rng = random.Random(fault)
    fleet = Fleet(prefix)
    agents = [f"did:mesh:{fault}-{i:04d}" for i in range(500)]
    address = broker.address
    await produce(address, steady_stream(fleet, rng, agents, 3000))
    await asyncio.sleep(1.0)
    # A backlog the worker is still working through when the broker goes.
    await produce(address, steady_stream(fleet, rng, agents, 20_000))
    began = time.monotonic()
    if fault == "kill":
        broker.kill()
    else:
        broker.stop()
    seen = await _watch_readiness(worker, pid, down_seconds - (time.monotonic() - began))
    broker.start()
    down = time.monotonic() - began
    wait_for_page(
        worker.base_url, "/readyz", lambda status, _: status == 200, 120, "ready after the outage"
    )
    recovered = time.monotonic() - began - down
    print(f"{fault}: broker down {down:.1f} s, worker ready again {recovered:.1f} s after restart")
    _same_worker(worker, pid, "the broker's return")
    await produce(address, steady_stream(fleet, rng, agents, 3000))
    await assert_final_scores(address, prefix, fleet, timeout=180)
    await assert_revocations_exact(address, prefix, fleet)
    _same_worker(worker, pid, "catching up")
    assert "Traceback" not in worker.log
    # Checked last, so that a failure here still means everything above held.
    assert 503 in seen, f"/readyz said ready throughout the broker's outage: {seen}"


async def test_broker_killed_mid_stream_and_restarted(
    private_broker: PrivateBroker, spawn_worker, topic_prefix: str
) -> None:
    worker, pid = await _start_worker(spawn_worker, private_broker)
    await _outage_then_recovery(worker, pid, private_broker, topic_prefix, "kill", 15)


async def test_broker_stopped_for_a_minute(
    private_broker: PrivateBroker, spawn_worker, topic_prefix: str
) -> None:
    worker, pid = await _start_worker(spawn_worker, private_broker)
    await _outage_then_recovery(worker, pid, private_broker, topic_prefix, "stop", 60)


def _bad_and_good(
    prefix: str, fleet: Fleet, rng: random.Random, agents: list[str], count: int
) -> tuple[list[tuple[str, int | None, bytes | None, bytes | None]], list[Hostile]]:
    """``count`` bad records, each between good signals: records to send and the bad ones."""
    records: list[tuple[str, int | None, bytes | None, bytes | None]] = []
    bad: list[Hostile] = []
    for i in range(count):
        for topic, key, value in steady_stream(fleet, rng, agents, 5):
            records.append((topic, None, key, value))
        topic = signal_topic(prefix, DIMENSIONS[i % len(DIMENSIONS)])
        did = rng.choice(agents).encode()
        value = rng.choice((b"{not json", rng.randbytes(rng.randrange(1, 3000)), b"\x01" * 90_000))
        bad.append(Hostile(f"bad {i}", topic, did, value, None))
        records.append((topic, None, did, value))
    return records, bad


async def _every_letter_once(
    address: str, deadletter: str, bad: set[tuple[str, int, int]], timeout: float
) -> set[tuple[str, int, int]]:
    """Wait until the dead-letter topic describes exactly ``bad`` (repeats byte-identical)."""
    letters: dict[tuple[str, int, int], bytes] = {}
    deadline = time.monotonic() + timeout
    while set(letters) != bad:
        missing = bad - set(letters)
        assert time.monotonic() < deadline, f"{len(missing)} bad records never dead-lettered"
        for record in await read_to_end(address, deadletter):
            assert record.value is not None
            position = letter_position(record.value)
            assert position in bad, f"a good signal was dead-lettered: {record.value!r}"
            first = letters.setdefault(position, record.value)
            assert first == record.value, (
                f"repeated dead letters differ:\n{first!r}\n{record.value!r}"
            )
        await asyncio.sleep(0.5)
    return set(letters)


@pytest.mark.parametrize("fault", ["refusing", "deleted"])
async def test_dead_letter_topic_unwritable_blocks_then_resumes_without_loss(
    private_broker: PrivateBroker, spawn_worker, topic_prefix: str, fault: str
) -> None:
    """The dead-letter topic refuses every record (``max.message.bytes`` too small), or is
    deleted (the broker creates no topic on its own), while bad and good records keep coming."""
    worker, pid = await _start_worker(spawn_worker, private_broker)
    address = private_broker.address
    deadletter = f"{topic_prefix}signals.deadletter"
    limit = await topic_setting(address, deadletter, "max.message.bytes")
    rng = random.Random(31337)
    fleet = Fleet(topic_prefix)
    agents = [f"did:mesh:blocked-{i:03d}" for i in range(200)]
    bad_positions: set[tuple[str, int, int]] = set()

    async def send(count: int) -> None:
        records, bad = _bad_and_good(topic_prefix, fleet, rng, agents, count)
        placed = await produce_to(address, records)
        bad_values = {(b.topic, b.key, b.value) for b in bad}
        bad_positions.update(
            pos
            for pos, (t, _, k, v) in zip(placed, records, strict=True)
            if (t, k, v) in bad_values
        )

    await send(20)
    wait_for_page(worker.base_url, "/readyz", lambda s, _: s == 200, 30, "ready before the fault")
    before = await _every_letter_once(address, deadletter, bad_positions, timeout=60)
    if fault == "deleted":
        bad_positions -= before  # their letters go with the topic

    if fault == "refusing":
        await set_topic_settings(address, deadletter, {"max.message.bytes": "64"})
    else:
        await delete_topics(address, [deadletter])
    await send(30)
    # What the worker shows while blocked is checked at the end, once the topic is back and the
    # data checked: a failure there then still says that nothing was lost.
    problems = []
    named, ready = poll_page(
        worker.base_url, "/readyz", lambda status, body: status == 503 and deadletter in body, 30
    )
    if not named:
        problems.append(f"/readyz did not name {deadletter} within 30 s; last {ready}")
    flagged, metrics = poll_page(
        worker.base_url,
        "/metrics",
        lambda status, body: metric_sum(body, "trust_outputs_blocked") == 1,
        10,
    )
    failures = (
        metric_sum(metrics[1], "trust_output_failures", topic=deadletter) if metrics else None
    )
    # A refused record fails, and is counted; records to a deleted topic are retried by the
    # producer itself and never fail within the test: blocked without a failure.
    if not flagged or (fault == "refusing" and not failures):
        problems.append(f"trust_outputs_blocked never 1, or no trust_output_failures ({failures})")
    print(f"{fault}: /readyz {ready}; {failures} failed deliveries to the dead-letter topic")
    await send(30)  # bad and good records keep coming while it is blocked
    seen = await _watch_readiness(worker, pid, 5)
    if set(seen) != {503}:
        problems.append(f"/readyz while blocked: {seen}")

    if fault == "refusing":
        await set_topic_settings(address, deadletter, {"max.message.bytes": limit})
    else:
        await create_topics(address, [deadletter], partitions=int(SETTINGS["partitions"]))
    wait_for_page(
        worker.base_url, "/readyz", lambda s, _: s == 200, 60, "ready once the topic accepts again"
    )
    await send(20)

    await assert_final_scores(address, topic_prefix, fleet, timeout=120)
    await assert_revocations_exact(address, topic_prefix, fleet)
    await _every_letter_once(address, deadletter, bad_positions, timeout=60)
    _, metrics_after = wait_for_page(
        worker.base_url, "/metrics", lambda s, _: s == 200, 30, "the metrics after"
    )
    assert metric_sum(metrics_after, "trust_outputs_blocked") == 0
    _same_worker(worker, pid, "the refused dead-letter topic")
    assert "Traceback" not in worker.log
    assert not problems, "\n".join(problems)


async def test_refused_scores_and_revocations_hold_progress_then_publish_every_owed_output(
    private_broker: PrivateBroker, spawn_worker, topic_prefix: str
) -> None:
    """The score and revocation topics refuse every record for a while (``max.message.bytes``
    too small). The worker waits, and is then killed while waiting: were any signal position
    stored past the batch that owes those outputs, the restarted worker would never read its
    signals again and the outputs would be lost. Once the topics accept again, every owed update
    and revocation is published (a repeat only byte for byte) and final scores equal the
    oracle's."""
    worker, pid = await _start_worker(spawn_worker, private_broker)
    address = private_broker.address
    outputs = [f"{topic_prefix}trust.scores", f"{topic_prefix}trust.revocations"]
    limits = {topic: await topic_setting(address, topic, "max.message.bytes") for topic in outputs}
    rng = random.Random(4242)
    fleet = Fleet(topic_prefix)
    agents = [f"did:mesh:owed-{i:03d}" for i in range(300)]
    await produce(address, steady_stream(fleet, rng, agents, 2000))
    wait_for_page(worker.base_url, "/readyz", lambda s, _: s == 200, 60, "ready before the fault")

    for topic in outputs:
        await set_topic_settings(address, topic, {"max.message.bytes": "64"})
    await produce(address, steady_stream(fleet, rng, agents, 3000))
    named, ready = poll_page(
        worker.base_url,
        "/readyz",
        lambda status, body: status == 503 and any(t in body for t in outputs),
        60,
    )
    await produce(address, steady_stream(fleet, rng, agents, 3000))
    await asyncio.sleep(3)  # blocked a while, periodic checkpoints due meanwhile
    _same_worker(worker, pid, "refused outputs")
    worker.kill()
    worker.start()  # on the same state directory
    worker.wait_until_assigned(timeout=120)
    await asyncio.sleep(3)  # still refused: the replay blocks again

    for topic, limit in limits.items():
        await set_topic_settings(address, topic, {"max.message.bytes": limit})
    wait_for_page(
        worker.base_url, "/readyz", lambda s, _: s == 200, 120, "ready once the topics accept"
    )
    await assert_final_scores(address, topic_prefix, fleet, timeout=180)
    await assert_revocations_exact(address, topic_prefix, fleet)
    assert "Traceback" not in worker.log_since_start()
    assert named, f"/readyz did not name a refusing output topic within 60 s; last {ready}"
