"""Sending records and knowing that Kafka has them: the worker's outputs and its changelog.

Why a module of its own: a record the worker sends is a promise (a score update, a revocation, a
dead letter, a state the changelog must hold). Progress (signal positions, tick offsets) may only
move past the input that made the promise once Kafka has confirmed it. aiokafka reports a failed
delivery only through the future ``send()`` returns, and ``flush()`` does not say which records
failed, so every send here keeps its future and the caller awaits :meth:`Delivery.confirm`.

A delivery that fails is retried, from the first failed record on and in the original order, until
it succeeds: some failures fix themselves (a broker restarting), others need an operator (a topic
deleted, a topic that refuses records of that size). Either way the worker does not crash and does
not skip: it waits, says so once per ``log_interval`` seconds, and shows it in ``/readyz`` and
``/metrics`` (:class:`DeliveryHealth`), and carries on by itself once the cause is gone. A record
sent again after a partial failure may reach Kafka twice; every output is safe to repeat
(byte-identical, deduplicated by its key fields), and a changelog record is the same state again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

log = logging.getLogger(__name__)


class Outgoing(NamedTuple):
    """One record to send to an explicit partition."""

    topic: str
    key: bytes | None
    value: bytes | None
    partition: int


@dataclass(slots=True)
class DeliveryHealth:
    """What the worker's deliveries look like now: shared by every :class:`Delivery`, read by the
    readiness check and the metrics."""

    #: Failed deliveries, by topic (each failed attempt of each record counts once).
    failures: Counter[str] = field(default_factory=Counter)
    #: Topic -> (since, last error) for every topic with a delivery that has not succeeded yet.
    blocked: dict[str, tuple[float, str]] = field(default_factory=dict)

    def describe_blocked(self) -> list[str]:
        now = time.monotonic()
        return [
            f"delivery to {topic} failing for {now - since:.0f} s: {error}"
            for topic, (since, error) in sorted(self.blocked.items())
        ]


class Retrying:
    """What to do while a topic refuses records: count, log once per interval, wait a growing
    while before the next try, and say when it works again."""

    def __init__(
        self,
        health: DeliveryHealth,
        *,
        retry_initial: float = 0.5,
        retry_max: float = 10.0,
        log_interval: float = 30.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.health = health
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._log_interval = log_interval
        self._sleep = sleep
        self._last_logged: dict[str, float] = {}
        self._delay: dict[str, float] = {}

    async def failed(self, topic: str, error: BaseException | str) -> None:
        """Record a failed delivery to ``topic`` and wait before the next try."""
        self.health.failures[topic] += 1
        self._report(topic, error if isinstance(error, str) else _describe(error))
        delay = self._delay.get(topic, self._retry_initial)
        self._delay[topic] = min(delay * 2, self._retry_max)
        await self._sleep(delay)

    def _report(self, topic: str, reason: str) -> None:
        since = self.health.blocked.get(topic, (time.monotonic(), ""))[0]
        self.health.blocked[topic] = (since, reason)
        now = time.monotonic()
        if now - self._last_logged.get(topic, -self._log_interval) >= self._log_interval:
            self._last_logged[topic] = now
            log.error(
                "Delivery to %s failing (%s); retrying, and nothing after it counts as done "
                "until it succeeds (logged once per %.0f s)",
                topic,
                reason,
                self._log_interval,
            )

    def stalled(self, topic: str, seconds: float) -> None:
        """Deliveries to ``topic`` have had no answer for ``seconds``: the producer is still
        retrying by itself (a topic that does not exist, a broker away), which can last as long
        as its request timeout. Shown as blocked meanwhile; not counted as a failure."""
        self._report(topic, f"no acknowledgement from the broker for {seconds:.0f} s")

    def recovered(self, topic: str) -> None:
        self._delay.pop(topic, None)
        blocked = self.health.blocked.pop(topic, None)
        if blocked is not None:
            self._last_logged.pop(topic, None)
            log.warning(
                "Delivery to %s works again after %.1f s", topic, time.monotonic() - blocked[0]
            )


class ProducerLane:
    """A producer of its own for a few topics, started and stopped with the worker.

    Why: a producer sends one request at a time to a broker, with every batch ready for it.
    While windows close, that is hundreds of kilobytes of score updates and states, and a
    revocation queued behind them waited for them (measured: 47 ms, and 284 ms once, at half
    load). Through a producer of its own it waits for nothing but its own acknowledgement."""

    def __init__(self, build: Callable[[], Any], *, name: str, retry_seconds: float = 5.0) -> None:
        #: Builds the unstarted AIOKafkaProducer (in the event loop it will run in).
        self._build = build
        self.name = name
        self._retry_seconds = retry_seconds
        self._producer: Any = None
        self._stopped = False

    def __call__(self) -> Any:
        """The started producer; None until it is (the topics then share the main one)."""
        return self._producer

    async def run(self) -> None:
        """Start the producer, trying again until the broker answers (or the lane is stopped)."""
        while self._producer is None and not self.stopped():
            producer = self._build()
            try:
                await producer.start()
            except Exception as exc:  # the broker away at start: the main producer serves
                log.warning(
                    "Producer for %s not started (%s); trying again in %.0f s",
                    self.name,
                    _describe(exc),
                    self._retry_seconds,
                )
                await producer.stop()
                await asyncio.sleep(self._retry_seconds)
            else:
                if self.stopped():  # stopped while starting: nothing may be left running
                    await producer.stop()
                    return
                self._producer = producer

    def stopped(self) -> bool:
        return self._stopped

    async def stop(self) -> None:
        self._stopped = True
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()


class Delivery:
    """Sends records through one producer, or a lane's for its topics, and confirms them (see
    the module docstring)."""

    def __init__(
        self,
        producer: Callable[[], Any],
        retrying: Retrying,
        *,
        patience: float = 5.0,
        lanes: Mapping[str, ProducerLane] | None = None,
    ) -> None:
        #: Returns the AIOKafkaProducer to send with (created late: it binds the event loop).
        self._producer = producer
        self.retrying = retrying
        self._patience = patience
        #: Topics sent through a producer of their own (see ProducerLane).
        self._lanes: dict[str, ProducerLane] = dict(lanes or {})

    def _producer_for(self, topic: str) -> Any:
        lane = self._lanes.get(topic)
        producer = None if lane is None else lane()
        return producer if producer is not None else self._producer()

    async def send(self, records: Sequence[Outgoing]) -> None:
        """Send ``records`` in order and return once Kafka has confirmed every one."""
        pending = list(records)
        while pending:
            failed_at, error = await self._attempt(pending)
            if failed_at is None:
                for topic in {r.topic for r in pending}:
                    self.retrying.recovered(topic)
                return
            # Records before the first failure are stored; the rest go again, in order.
            pending = pending[failed_at:]
            await self.retrying.failed(pending[0].topic, error)

    async def _attempt(self, records: Sequence[Outgoing]) -> tuple[int | None, str]:
        """Send every record, wait for all; the index of the first that failed, and why."""
        main = self._producer()
        futures: list[asyncio.Future[Any]] = []
        refused: tuple[int | None, str] = (None, "")
        for index, record in enumerate(records):
            producer = self._producer_for(record.topic) if self._lanes else main
            try:
                future = await producer.send(
                    record.topic, record.value, key=record.key, partition=record.partition
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # refused before sending: too large, no metadata, closed
                refused = (index, _describe(exc))
                break
            futures.append(future)
        topic_of = {id(f): r.topic for f, r in zip(futures, records, strict=False)}

        def stalled(seconds: float, waiting: set[asyncio.Future[Any]]) -> None:
            for topic in {topic_of[id(f)] for f in waiting}:
                self.retrying.stalled(topic, seconds)

        results = await acknowledged(futures, stalled, self._patience)
        for index, result in enumerate(results):
            if isinstance(result, asyncio.CancelledError):
                raise result
            if isinstance(result, BaseException):
                return index, _describe(result)
        return refused


#: How long acknowledgements may be outstanding before the deliveries count as blocked.
PATIENCE_SECONDS = 5.0


async def acknowledged(
    futures: Sequence[asyncio.Future[Any]],
    on_stall: Callable[[float, set[asyncio.Future[Any]]], None],
    patience: float = PATIENCE_SECONDS,
) -> list[Any]:
    """Each future's result or exception, once all are done; ``on_stall(seconds waited, the
    futures still waiting)`` every ``patience`` seconds until then. The futures are never
    cancelled: the producer goes on retrying them, and a record it stores late is still stored."""
    started = time.monotonic()
    pending: set[asyncio.Future[Any]] = set(futures)
    while pending:
        _, pending = await asyncio.wait(pending, timeout=patience)
        if pending:
            on_stall(time.monotonic() - started, pending)
    return [
        asyncio.CancelledError() if f.cancelled() else (f.exception() or f.result())
        for f in futures
    ]


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
