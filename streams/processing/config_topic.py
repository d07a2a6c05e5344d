"""Live scoring configuration: weights and thresholds travel on a control topic.

An update is validated before it is published (an invalid one is rejected whole, with every
problem named, and nothing is sent) and again by every worker that reads it (a record that slipped
past, whatever its bytes, is logged, counted and ignored; the configuration in force stays). The
topic has one partition, so every worker reads the same updates in the same order, and an update's
version is its offset + 1: the same number on every worker, always increasing, with 0 meaning "the
settings' defaults". The topic keeps every record (see ``topicadmin.CONFIG_TOPIC_CONFIGS``), so
no record, however forged, can remove the last valid one.
"""

from __future__ import annotations

import asyncio
import logging
from bisect import bisect_right
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from aiokafka import TopicPartition
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streams.kafka import clients
from streams.kafka.clients import Connectable
from streams.scoring.model import (
    DIMENSIONS,
    Dimension,
    DimensionFloor,
    InvalidScoringConfig,
    ScoringConfig,
)

log = logging.getLogger(__name__)

#: In force from before any signal: the settings' configuration (version 0).
_EARLIEST = -(1 << 62)

CONFIG_KEY = b"scoring-config"
#: Larger records are refused unread (no legitimate configuration is near this size); the topic's
#: max.message.bytes is the same.
MAX_CONFIG_RECORD_BYTES = 64 * 1024
#: Problems named per rejected record, and characters of a rejection kept: a forged record must
#: not turn into a megabyte log line.
_PROBLEMS_NAMED = 5
_REASON_CHARS = 500
#: Backoff between attempts to follow the topic after a broker error, doubling up to the maximum.
_RETRY_MIN_SECONDS = 0.5
_RETRY_MAX_SECONDS = 30.0


class FloorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    floor: Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)]
    # Bounded: a floor needing more signals than that would never apply, and an unbounded
    # integer could not even be logged (JSON numbers are 64-bit).
    min_signals: Annotated[int, Field(ge=1, le=1_000_000)] = 1


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
        raise InvalidScoringConfig("empty record (a tombstone)")
    if len(value) > MAX_CONFIG_RECORD_BYTES:
        raise InvalidScoringConfig(
            f"record of {len(value)} bytes, over the {MAX_CONFIG_RECORD_BYTES} a configuration "
            "may have"
        )
    try:
        update = ConfigUpdate.model_validate_json(value)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(record)'}: {e['msg']}"
            for e in errors[:_PROBLEMS_NAMED]
        )
        if len(errors) > _PROBLEMS_NAMED:
            problems = f"{len(errors)} problems, the first {_PROBLEMS_NAMED}: {problems}"
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
    kafka: Connectable, topic: str, config: ScoringConfig, requested_by: str | None = None
) -> ScoringConfig:
    """Publish a validated configuration; returns it with the version it will have everywhere."""
    ScoringConfig.validated(
        config.weights, config.revocation_threshold, config.warning_threshold, floors=config.floors
    )  # refuses anything invalid before a byte is sent
    async with clients.producer(kafka, purpose="config-publisher") as producer:
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


async def read_config(kafka: Connectable, topic: str, default: ScoringConfig) -> ScoringConfig:
    """The configuration in force: the newest valid update on the topic, else ``default``.

    A broker error ends the read with that error (a command line reports it), where a worker's
    follower would retry.
    """
    follower = ConfigFollower(kafka, topic, default)
    task = asyncio.create_task(follower.run(retry=False))
    ready = asyncio.create_task(follower.ready.wait())
    try:
        done, _ = await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()  # raises what stopped the follower
        return follower.current
    finally:
        task.cancel()
        ready.cancel()
        await asyncio.gather(task, ready, return_exceptions=True)


class ConfigFollower:
    """Follows the config topic and holds the configuration in force on this worker.

    Whatever the topic holds, following goes on: a record that is not a valid configuration under
    :data:`CONFIG_KEY` is logged, counted in :attr:`rejected_records` and ignored, and a broker
    error or timeout is logged and retried with backoff.
    """

    def __init__(self, kafka: Connectable, topic: str, default: ScoringConfig) -> None:
        self._kafka = kafka
        self._topic = topic
        self.current = default
        #: Every configuration that came into force, with the time (epoch ms) from which it is
        #: in force: its record's timestamp, or the previous one's when that is later (so the
        #: times only grow). See :meth:`at`.
        self._since: list[int] = [_EARLIEST]
        self._versions: list[ScoringConfig] = [default]
        #: Set once every update published before this worker started has been read.
        self.ready = asyncio.Event()
        #: Records ignored because they were not a valid configuration, and why the last one was.
        self.rejected_records = 0
        self.last_rejection: str | None = None
        #: Times following failed on a broker error and was started again.
        self.follow_failures = 0
        #: Offset of the next record to read: a new consumer after a failure starts there, so
        #: no record is applied or counted twice.
        self._next_offset = 0
        #: End of the topic when following first started: ``ready`` waits for it.
        self._end: int | None = None
        self._following = False

    def config(self) -> ScoringConfig:
        return self.current

    def at(self, time_ms: int) -> ScoringConfig:
        """The configuration in force at ``time_ms``: the newest one published at or before it.

        What a window's score and a critical signal are judged with (at the window's end, at the
        signal's time), so that replaying the same signals gives the same outputs whenever they
        are processed. A change takes effect from its record's timestamp, for whatever reaches
        the worker after the change has: a window closes at its end plus grace, so a change
        reaches every window that ends after it, if it arrives within the grace period.
        """
        since = self._since
        if time_ms >= since[-1]:
            return self._versions[-1]
        return self._versions[bisect_right(since, time_ms) - 1]

    def apply(
        self, key: bytes | None, value: bytes | None, offset: int, timestamp_ms: int = 0
    ) -> None:
        """Take one record of the topic: a newer valid configuration comes into force."""
        self._next_offset = max(self._next_offset, offset + 1)
        try:
            if key != CONFIG_KEY:
                shown = repr(key[:64]) if key is not None else "none"
                raise InvalidScoringConfig(f"key {shown} is not {CONFIG_KEY!r}")
            config = config_from_record(value, offset)
        except InvalidScoringConfig as exc:
            self._reject(offset, str(exc))
            return
        except Exception as exc:  # no record may stop the follower
            self._reject(offset, f"unexpected {exc!r}")
            return
        if config.version <= self.current.version:
            return
        self.current = config
        self._since.append(max(timestamp_ms, self._since[-1]))
        self._versions.append(config)
        log.info(
            "Scoring configuration version %d in force: %s",
            config.version,
            orjson.dumps(describe(config)).decode(),
        )

    def _reject(self, offset: int, reason: str) -> None:
        reason = reason if len(reason) <= _REASON_CHARS else reason[:_REASON_CHARS] + "..."
        self.rejected_records += 1
        self.last_rejection = f"offset {offset}: {reason}"
        log.error(
            "Ignoring invalid scoring configuration at %s offset %d (version %d stays in "
            "force): %s",
            self._topic,
            offset,
            self.current.version,
            reason,
        )

    async def run(self, *, retry: bool = True) -> None:
        """Follow the topic until cancelled; with ``retry``, broker errors never end it."""
        delay = _RETRY_MIN_SECONDS
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # following outlives any broker fault
                if not retry:
                    raise
                if self._following:  # it had been working: start the backoff over
                    self._following = False
                    delay = _RETRY_MIN_SECONDS
                self.follow_failures += 1
                log.warning(
                    "Following the config topic %s failed (%r); retrying in %.1f s from offset "
                    "%d (version %d stays in force)",
                    self._topic,
                    exc,
                    delay,
                    self._next_offset,
                    self.current.version,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_SECONDS)

    async def _follow(self) -> None:
        # Records before the log start are gone: carry on from the oldest that remains
        # (auto_offset_reset="earliest", as every consumer of the service).
        consumer = clients.consumer(self._kafka, purpose="config-follower")
        try:
            await consumer.start()
            tp = TopicPartition(self._topic, 0)
            consumer.assign([tp])
            if self._next_offset:
                consumer.seek(tp, self._next_offset)
            else:
                await consumer.seek_to_beginning(tp)
            if self._end is None:
                self._end = (await consumer.end_offsets([tp]))[tp]
            self._following = True
            while True:
                if not self.ready.is_set() and await consumer.position(tp) >= self._end:
                    self.ready.set()
                batch = await consumer.getmany(tp, timeout_ms=500)
                for record in batch.get(tp, []):
                    self.apply(record.key, record.value, record.offset, record.timestamp)
        finally:
            await consumer.stop()
