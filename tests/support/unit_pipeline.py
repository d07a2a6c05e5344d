"""A whole scoring pipeline on a state directory and a fake producer, for unit tests of what it
stores and publishes across deaths (the producer decides what Kafka acknowledges)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from streams.kafka.delivery import Delivery, DeliveryHealth, Retrying
from streams.kafka.topics import TopicNames
from streams.processing.intake import SignalIntake
from streams.processing.pipeline import ScoringPipeline
from streams.scoring.model import ScoringConfig
from streams.scoring.windows import WindowPolicy
from streams.state.store import StateStore
from tests.support.fake_kafka import FakeProducer


async def _no_rewind(topic: str, partition: int, offset: int) -> None:
    raise AssertionError("signal offsets are contiguous")


def unit_pipeline(
    directory: Path,
    producer: FakeProducer,
    *,
    names: TopicNames,
    windows: WindowPolicy,
    config: ScoringConfig,
    now_ms: int,
    partitions: int = 1,
    **options: Any,
) -> ScoringPipeline:
    """A pipeline owning every partition, deliveries retried every 10 ms."""
    retrying = Retrying(DeliveryHealth(), retry_initial=0.01)
    store = StateStore(
        state_dir=directory,
        changelog_topic=names.agent_state,
        producer=lambda: producer,
        delivery=retrying,
    )
    pipeline = ScoringPipeline(
        app=None,
        store=store,
        names=names,
        windows=windows,
        config=lambda: config,
        intake=SignalIntake(max_bytes=65_536, partitions=partitions, future_tolerance_ms=5000),
        delivery=Delivery(lambda: producer, retrying),
        rewind=_no_rewind,
        now_ms=lambda: now_ms,
        **options,
    )
    pipeline.mark_restored(set(range(partitions)))
    return pipeline
