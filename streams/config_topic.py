"""Live scoring configuration: weights and thresholds travel on a compacted control topic.

An update is validated before it is published (an invalid one is rejected whole, with every
problem named, and nothing is sent) and again by every worker that reads it (a record that slipped
past is logged and ignored; the configuration in force stays). The topic has one partition, so
every worker reads the same updates in the same order, and an update's version is its offset + 1:
the same number on every worker, always increasing, with 0 meaning "the settings' defaults".
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .scoring.model import (
    DIMENSIONS,
    Dimension,
    DimensionFloor,
    InvalidScoringConfig,
    ScoringConfig,
)

log = logging.getLogger(__name__)

CONFIG_KEY = b"scoring-config"


class FloorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    floor: Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)]
    min_signals: Annotated[int, Field(ge=1)] = 1


class ConfigUpdate(BaseModel):
    """A complete scoring configuration, as published on the config topic."""

    model_config = ConfigDict(extra="forbid")

    weights: dict[Dimension, Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]]
    revocation_threshold: Annotated[int, Field(ge=0, le=1000)]
    warning_threshold: Annotated[int, Field(ge=0, le=1000)]
    floors: dict[Dimension, FloorSpec] = Field(
        default_factory=dict,
        description="Per-dimension revocation floors; dimensions left out have none.",
    )
    requested_by: Annotated[str, Field(max_length=256)] | None = None
    requested_at: datetime | None = None


def _to_config(update: ConfigUpdate, version: int) -> ScoringConfig:
    missing = [d.value for d in DIMENSIONS if d not in update.weights]
    if missing:
        raise InvalidScoringConfig(f"weights missing for: {', '.join(missing)}")
    floors = tuple(
        DimensionFloor(spec.floor, spec.min_signals) if (spec := update.floors.get(d)) else None
        for d in DIMENSIONS
    )
    return ScoringConfig.validated(
        [update.weights[d] for d in DIMENSIONS],
        update.revocation_threshold,
        update.warning_threshold,
        version=version,
        floors=floors,
    )


def config_from_record(value: bytes | None, offset: int) -> ScoringConfig:
    """The configuration a record carries, versioned by its offset; InvalidScoringConfig if bad."""
    if value is None:
        raise InvalidScoringConfig("empty record")
    try:
        update = ConfigUpdate.model_validate_json(value)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(record)'}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        raise InvalidScoringConfig(problems) from exc
    return _to_config(update, version=offset + 1)


def encode_update(config: ScoringConfig, requested_by: str | None = None) -> bytes:
    update = ConfigUpdate(
        weights={d: config.weights[i] for i, d in enumerate(DIMENSIONS)},
        revocation_threshold=config.revocation_threshold,
        warning_threshold=config.warning_threshold,
        floors={
            d: FloorSpec(floor=f.floor, min_signals=f.min_signals)
            for d, f in zip(DIMENSIONS, config.floors, strict=True)
            if f is not None
        },
        requested_by=requested_by,
        requested_at=datetime.now(UTC),
    )
    return update.model_dump_json(exclude_none=True).encode()


def describe(config: ScoringConfig) -> dict[str, Any]:
    return {
        "version": config.version,
        "weights": {d.value: config.weights[i] for i, d in enumerate(DIMENSIONS)},
        "revocation_threshold": config.revocation_threshold,
        "warning_threshold": config.warning_threshold,
        "floors": {
            d.value: {"floor": f.floor, "min_signals": f.min_signals}
            for d, f in zip(DIMENSIONS, config.floors, strict=True)
            if f is not None
        },
    }


async def publish_config(
    bootstrap_servers: str, topic: str, config: ScoringConfig, requested_by: str | None = None
) -> ScoringConfig:
    """Publish a validated configuration; returns it with the version it will have everywhere."""
    ScoringConfig.validated(
        config.weights, config.revocation_threshold, config.warning_threshold, floors=config.floors
    )  # refuses anything invalid before a byte is sent
    async with AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers, acks="all", enable_idempotence=True
    ) as producer:
        metadata = await producer.send_and_wait(
            topic, encode_update(config, requested_by), key=CONFIG_KEY, partition=0
        )
    return ScoringConfig.validated(
        config.weights,
        config.revocation_threshold,
        config.warning_threshold,
        version=metadata.offset + 1,
        floors=config.floors,
    )


async def read_config(bootstrap_servers: str, topic: str, default: ScoringConfig) -> ScoringConfig:
    """The configuration in force: the newest valid update on the topic, else ``default``."""
    follower = ConfigFollower(bootstrap_servers, topic, default)
    task = asyncio.create_task(follower.run())
    try:
        ready = asyncio.create_task(follower.ready.wait())
        done, _ = await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()  # raises what stopped the follower
        return follower.current
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class ConfigFollower:
    """Follows the config topic and holds the configuration in force on this worker."""

    def __init__(self, bootstrap_servers: str, topic: str, default: ScoringConfig) -> None:
        self._bootstrap = bootstrap_servers
        self._topic = topic
        self.current = default
        #: Set once every update published before this worker started has been read.
        self.ready = asyncio.Event()

    def config(self) -> ScoringConfig:
        return self.current

    def apply(self, value: bytes | None, offset: int) -> None:
        try:
            config = config_from_record(value, offset)
        except InvalidScoringConfig as exc:
            log.error(
                "Ignoring invalid scoring configuration at %s offset %d (version %d stays in "
                "force): %s",
                self._topic,
                offset,
                self.current.version,
                exc,
            )
            return
        if config.version <= self.current.version:
            return
        self.current = config
        log.info(
            "Scoring configuration version %d in force: %s",
            config.version,
            orjson.dumps(describe(config)).decode(),
        )

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap, enable_auto_commit=False, group_id=None
        )
        await consumer.start()
        try:
            tp = TopicPartition(self._topic, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end = (await consumer.end_offsets([tp]))[tp]
            while True:
                if not self.ready.is_set() and await consumer.position(tp) >= end:
                    self.ready.set()
                batch = await consumer.getmany(tp, timeout_ms=500)
                for record in batch.get(tp, []):
                    self.apply(record.value, record.offset)
        finally:
            await consumer.stop()
