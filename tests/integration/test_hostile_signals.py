"""Whatever a producer writes to a signal topic, the worker keeps running and loses nothing.

Records of every size up to the broker's own limit (control bytes, random bytes, empty, huge and
non-UTF-8 keys, no key), forged timestamps and signals on the wrong partition go to the dead-letter
topic, each described by a bounded letter; the good signals among them are all applied, exactly as
the oracle scores them; and the worker process is never replaced.
"""

from __future__ import annotations

import random
import time
import urllib.parse

from streams.messages import DeadLetter
from tests.support.admin import broker_message_limit
from tests.support.hostile import (
    MAX_DEAD_LETTER_BYTES,
    Hostile,
    assert_letter_describes,
    hostile_signals,
    letter_position,
)
from tests.support.kafka_io import Record, consume, produce
from tests.support.outcomes import (
    assert_final_scores,
    assert_revocations_exact,
    read_to_end,
    steady_stream,
)
from tests.support.signals import Fleet, signal_topic
from tests.support.web import get, metric_sum, try_get, wait_for_page
from tests.support.worker import WorkerProcess

PARTITIONS = 3


def _alive(worker: WorkerProcess, pid: int, what: str) -> None:
    """Fail at once, with the log, when the worker died or was replaced while we wait."""
    if not worker.running() or worker.process is None or worker.process.pid != pid:
        raise AssertionError(
            f"the worker stopped while waiting for {what} (exit {worker.returncode()}):\n"
            f"{worker.log[-6000:]}"
        )


async def _send_interleaved(
    bootstrap: str, hostile: list[Hostile], good: list[tuple[str, bytes, bytes]]
) -> dict[tuple[str, int, int], Hostile]:
    """Send the bad records with good ones between them; where each bad one landed."""
    records: list[tuple[str, bytes | None, bytes | None]] = []
    bad_at: list[Hostile | None] = []
    per_gap = len(good) // (len(hostile) + 1)
    for i, bad in enumerate(hostile):
        chunk = good[i * per_gap : (i + 1) * per_gap]
        records.extend(chunk)
        bad_at.extend([None] * len(chunk))
        records.append((bad.topic, bad.key, bad.value))
        bad_at.append(bad)
    rest = good[len(hostile) * per_gap :]
    records.extend(rest)
    bad_at.extend([None] * len(rest))
    forced = {bad.key: bad.partition for bad in hostile if bad.partition is not None}
    placed = await produce(bootstrap, records, partition_of=lambda topic, key: forced.get(key))
    expected = {pos: bad for pos, bad in zip(placed, bad_at, strict=True) if bad is not None}
    assert len(expected) == len(hostile)
    return expected


async def _check_dead_letters(
    bootstrap: str,
    prefix: str,
    worker: WorkerProcess,
    expected: dict[tuple[str, int, int], Hostile],
    kept_bytes: int,
    max_letter_bytes: int,
) -> int:
    """Every bad record has its letter (repeats identical), bounded; returns the largest size."""
    pid = worker.process.pid if worker.process else -1

    deadletter = f"{prefix}signals.deadletter"

    def every_letter(found: list[Record]) -> bool:
        _alive(worker, pid, "the dead letters")
        if {letter_position(r.value) for r in found} >= set(expected):
            return True
        ready = try_get(worker.base_url, "/readyz")
        if ready is not None and f"delivery to {deadletter} failing" in ready[1]:
            raise AssertionError(f"the dead-letter topic refuses a dead letter: {ready[1]}")
        return False

    dead = await consume(
        bootstrap,
        [deadletter],
        until=every_letter,
        timeout=120,
        what=f"{len(expected)} dead letters",
    )
    letters: dict[tuple[str, int, int], bytes] = {}
    largest = 0
    for record in dead:
        assert record.value is not None
        size = len(record.value) + len(record.key or b"")
        largest = max(largest, size)
        body = record.json()
        position = letter_position(record.value)
        assert position in expected, f"a good signal was dead-lettered: {body}"
        first = letters.setdefault(position, record.value)
        assert first == record.value, (
            f"a repeated dead letter differs:\n{first!r}\n{record.value!r}"
        )
        bad = expected[position]
        assert size <= max_letter_bytes, f"{bad.label}: dead letter of {size} bytes"
        if bad.kind is not None:
            assert body["error_kind"] == bad.kind, (bad.label, body["error_kind"], body["error"])
        assert body["error"], bad.label
        assert_letter_describes(body, bad.key, bad.value, kept_bytes)
        DeadLetter.model_validate(body)
    return largest


async def test_records_of_every_size_and_shape_are_dead_lettered_and_good_ones_applied(
    kafka_bootstrap: str, spawn_worker, topic_prefix: str
) -> None:
    worker = spawn_worker(window_seconds="3", grace_seconds="1", partitions=str(PARTITIONS))
    worker.wait_until_ready(timeout=120)
    pid = worker.process.pid
    topic = signal_topic(topic_prefix, "output_quality")
    limit = await broker_message_limit(kafka_bootstrap, topic)
    assert limit >= 1_000_000, f"the broker accepts only {limit} bytes per record batch"

    rng = random.Random(5150)
    hostile = hostile_signals(topic_prefix, rng, limit, PARTITIONS, int(time.time() * 1000))
    fleet = Fleet(topic_prefix)
    agents = [f"did:mesh:steady-{i:03d}" for i in range(60)]
    expected = await _send_interleaved(
        kafka_bootstrap, hostile, steady_stream(fleet, rng, agents, 1500)
    )

    largest = await _check_dead_letters(
        kafka_bootstrap, topic_prefix, worker, expected, 4096, MAX_DEAD_LETTER_BYTES
    )
    print(f"largest dead letter: {largest} bytes, of {len(hostile)} bad records")
    await assert_final_scores(kafka_bootstrap, topic_prefix, fleet, timeout=120)
    await assert_revocations_exact(kafka_bootstrap, topic_prefix, fleet)

    # Nothing that was dead-lettered changed any state: no update, and the agents are unknown.
    scores = await read_to_end(kafka_bootstrap, f"{topic_prefix}trust.scores")
    assert not [s for s in scores if s.json()["agent_did"].startswith("did:mesh:hostile-")]
    for bad in hostile:
        if bad.kind == "wrong_partition":
            assert bad.key is not None
            did = urllib.parse.quote(bad.key.decode(), safe="")
            status, body = get(worker.base_url, f"/agents/{did}/score")
            assert status == 404, (bad.label, status, body)
    _, metrics = wait_for_page(
        worker.base_url, "/metrics", lambda status, _: status == 200, 30, "metrics"
    )
    assert metric_sum(metrics, "trust_dead_letters") == len(hostile)

    _alive(worker, pid, "the end of the test")
    assert "Traceback" not in worker.log


async def test_dead_letters_fit_the_broker_at_the_largest_kept_prefix(
    kafka_bootstrap: str, spawn_worker, topic_prefix: str
) -> None:
    """At its largest setting the kept prefix (escaped six-fold as control bytes) would not fit a
    record the broker accepts; a dead letter still must."""
    kept = 256 * 1024  # the setting's upper bound
    worker = spawn_worker(
        window_seconds="3",
        grace_seconds="1",
        partitions=str(PARTITIONS),
        dead_letter_value_bytes=str(kept),
    )
    worker.wait_until_ready(timeout=120)
    pid = worker.process.pid
    topic = signal_topic(topic_prefix, "security_posture")
    limit = await broker_message_limit(kafka_bootstrap, topic)
    did = b"did:mesh:hostile-control"
    hostile = [
        Hostile(f"{size} control bytes", topic, did, b"\x01" * size, None)
        for size in (60_000, 200_000, 256 * 1024, limit - 512)
    ] + [Hostile("control-byte key", topic, b"\x01" * 500_000, b"\x02" * 500_000, None)]
    rng = random.Random(77)
    fleet = Fleet(topic_prefix)
    expected = await _send_interleaved(
        kafka_bootstrap,
        hostile,
        steady_stream(fleet, rng, [f"did:mesh:steady-{i}" for i in range(20)], 200),
    )
    largest = await _check_dead_letters(
        kafka_bootstrap, topic_prefix, worker, expected, kept, limit
    )
    print(f"largest dead letter: {largest} bytes (the broker accepts {limit})")
    await assert_final_scores(kafka_bootstrap, topic_prefix, fleet, timeout=60)
    _alive(worker, pid, "the end of the test")
    assert "Traceback" not in worker.log
