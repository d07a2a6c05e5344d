"""The parts of Faust's clients that Faust keeps private, reached in one place.

The worker needs a few things Faust has no public API for: whether its consumer has started (and,
for the lag metric, what it was assigned), the aiokafka producer behind Faust's (so that
deliveries can be confirmed one by one), and un-acknowledging offsets Faust took for holes when a
partition is read again.
Each is one function here, so an upgrade of Faust that moves them breaks this module alone.
"""

from __future__ import annotations

from typing import Any

from faust.types import TP


def faust_consumer(app: Any) -> Any | None:
    """Faust's consumer, or ``None`` until the worker has started it."""
    return app._consumer


def kafka_producer(app: Any) -> Any:
    """The AIOKafkaProducer behind Faust's producer (created on first use: it binds the loop)."""
    return app.producer._ensure_producer()


async def rewind(app: Any, topic: str, partition: int, offset: int) -> None:
    """Read a partition again from ``offset``, and un-acknowledge what Faust took for a hole."""
    tp = TP(topic, partition)
    consumer: Any = app.consumer
    holes = consumer._gap.get(tp)  # Faust's skipped-offset intervals, per partition
    if holes:
        holes.chop(offset, 2**63)
    await consumer.seek(tp, offset)
