"""The soak benchmark's steady load, sent from a process of its own (a busy load generator in the
measuring process would be measured as the worker's latency)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from tests.benchmarks.latency import (
    BACKGROUND_VALUES,
    PACE_S,
    Background,
    BenchmarkFailure,
    _send_batch,
    signal_bytes,
)
from tests.benchmarks.soakfigures import Population
from tests.support.kafka_io import producer as make_producer


async def paced_population(
    producer: AIOKafkaProducer,
    topics: Sequence[str],
    population: Population,
    rate: float,
    duration: float,
    rng: random.Random,
) -> Background:
    """The latency benchmark's paced background, with the agents chosen by ``population`` at
    each moment: ``rate`` signals a second, sent as record batches per topic-partition."""
    result = Background()
    total = round(rate * duration)
    dids = [population.did(i) for i in range(population.agents)]
    keys = [did.encode() for did in dids]
    hashes = [int(murmur2(key) & 0x7FFFFFFF) for key in keys]
    partitions = {topic: len(await producer.partitions_for(topic)) for topic in topics}
    started = time.perf_counter()
    while result.sent < total:
        elapsed = time.perf_counter() - started
        due = min(total, int(elapsed * rate) + 1)
        builders: dict[tuple[str, int], Any] = {}
        while result.sent < due:
            i = population.pick(rng, elapsed)
            topic = topics[rng.randrange(len(topics))]
            tp = (topic, hashes[i] % partitions[topic])
            builder = builders.get(tp)
            if builder is None:
                builder = builders[tp] = producer.create_batch()
            value = signal_bytes(dids[i], rng.choice(BACKGROUND_VALUES))
            if builder.append(key=keys[i], value=value, timestamp=None) is None:
                await _send_batch(producer, builder, tp, result)
                builder = builders[tp] = producer.create_batch()
                builder.append(key=keys[i], value=value, timestamp=None)
            result.sent += 1
        for tp, builder in builders.items():
            await _send_batch(producer, builder, tp, result)
        await asyncio.sleep(PACE_S)
    result.seconds = time.perf_counter() - started
    await producer.flush()
    if result.failed:
        raise BenchmarkFailure(
            f"{len(result.failed)} background batches were not acknowledged: {result.failed[0]!r}"
        )
    return result


def load_in_own_process(
    bootstrap: str,
    topics: Sequence[str],
    population: Population,
    rate: float,
    duration: float,
    seed: int,
    start_at: float,
) -> tuple[int, int, float]:
    """:func:`paced_population` in a process of its own (a busy load generator in the measuring
    process would be measured as the worker's latency), from wall-clock time ``start_at``."""

    async def send() -> Background:
        producer = make_producer(bootstrap)
        await producer.start()
        try:
            await asyncio.sleep(max(0.0, start_at - time.time()))
            return await paced_population(
                producer, topics, population, rate, duration, random.Random(seed)
            )
        finally:
            await producer.stop()

    background = asyncio.run(send())
    return background.sent, background.acked, background.seconds
