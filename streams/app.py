"""Faust wiring: the app, its topics and table, the scoring agent and the tick timer.

All decisions live in :mod:`streams.pipeline` and :mod:`streams.scoring`; this module only connects
them to Faust.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import faust
from faust.types import TP

from .api import install as install_api
from .brokerwatch import BrokerWatch, metadata_probe
from .closing import encode_tick
from .config_topic import ConfigFollower
from .delivery import Delivery, DeliveryHealth, Retrying
from .expiry import AgentExpiry
from .feed import SignalFeed
from .intake import SignalIntake
from .observability import install as install_observability
from .pipeline import ScoringPipeline, wall_clock_ms
from .restore import restore_verified
from .settings import Settings
from .statestore import StateStore
from .topics import TopicNames

log = logging.getLogger(__name__)

STATE_TABLE = "agent-state"


@dataclass(slots=True)
class TrustApp:
    app: faust.App
    settings: Settings
    names: TopicNames
    table: Any
    pipeline: ScoringPipeline
    config: ConfigFollower
    feed: SignalFeed


def _broker_urls(bootstrap_servers: str) -> list[str]:
    return [f"kafka://{host.strip()}" for host in bootstrap_servers.split(",") if host.strip()]


async def _rewind(app: faust.App, topic: str, partition: int, offset: int) -> None:
    """Read a partition again from ``offset``, and un-acknowledge what Faust took for a hole."""
    tp = TP(topic, partition)
    consumer: Any = app.consumer  # Faust keeps its skipped-offset intervals private
    holes = consumer._gap.get(tp)
    if holes:
        holes.chop(offset, 2**63)
    await consumer.seek(tp, offset)


def create_app(settings: Settings) -> TrustApp:
    names = TopicNames(settings.topic_prefix)
    app = faust.App(
        settings.app_id,
        broker=_broker_urls(settings.kafka_bootstrap_servers),
        store="rocksdb://",
        datadir=str(settings.state_dir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # Batch produce requests: changelog writes come one per agent per batch, and unbatched
        # they cost a syscall and a request each.
        producer_linger_ms=5,
        producer_max_batch_size=256 * 1024,
        producer_compression_type=None if settings.compression == "none" else settings.compression,
        # Small prefetch per partition: the ticks topic must not wait behind megabytes of
        # prefetched signals, or windows close late under backlog.
        consumer_max_fetch_size=settings.fetch_bytes_per_partition,
        broker_max_poll_records=settings.batch_max,
        stream_buffer_maxsize=settings.batch_max,
        # Commit often: the replay after a crash is bounded by the commit interval.
        broker_commit_interval=1.0,
        table_standby_replicas=0,
        broker_session_timeout=settings.session_timeout_seconds,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_seconds / 3),
        web_enabled=True,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        # How the other workers reach this one when they forward a request about our agents.
        canonical_url=f"http://{settings.web_host}:{settings.web_port}",
        web_in_thread=False,
    )
    # Never written: it only tells Faust's router which worker owns which agent (the HTTP API
    # forwards requests by it). The state itself lives in streams.statestore.
    table = app.Table(
        STATE_TABLE,
        default=None,
        key_type=bytes,  # raw DID bytes: the same bytes producers partition by
        value_type=bytes,
        partitions=settings.partitions,
    )
    config = ConfigFollower(settings.kafka_bootstrap_servers, names.config, settings.scoring_config)

    # The AIOKafkaProducer behind Faust's: the changelog and every output go through it, and each
    # delivery is confirmed (see streams.delivery).
    def kafka_producer() -> Any:
        return app.producer._ensure_producer()  # type: ignore[attr-defined]

    retrying = Retrying(DeliveryHealth())
    store = StateStore(
        state_dir=settings.state_dir,
        changelog_topic=names.agent_state,
        producer=kafka_producer,
        cache_agents=settings.state_cache_agents,
        delivery=retrying,
    )
    pipeline = ScoringPipeline(
        app=app,
        store=store,
        names=names,
        windows=settings.window_policy,
        config=config.config,
        config_ready=config.ready,
        intake=SignalIntake(
            max_bytes=settings.max_message_bytes,
            partitions=settings.partitions,
            future_tolerance_ms=settings.window_policy.grace_ms,
        ),
        delivery=Delivery(kafka_producer, retrying),
        tick_tolerance_ms=round(settings.tick_tolerance_seconds * 1000),
        dead_letter_kept_bytes=settings.dead_letter_value_bytes,
        rewind=lambda topic, partition, offset: _rewind(app, topic, partition, offset),
    )
    # Signals are read by the feed (see streams/feed.py); Faust's stream carries only the ticks
    # and commands, and its consumer group decides which partitions this worker owns.
    feed = SignalFeed(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        topics=names.signals,
        process=pipeline.process_records,
        make_durable=pipeline.make_durable,
        positions=pipeline.signal_positions,
        batch_max=settings.batch_max,
        fetch_bytes_per_partition=settings.signal_fetch_bytes_per_partition,
        durable_interval=settings.state_flush_seconds,
    )
    source = app.topic(
        names.ticks,
        names.commands,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )

    @app.task
    async def follow_config() -> None:
        await config.run()

    @app.task
    async def feed_signals() -> None:
        await feed.start()
        try:
            await feed.run()
        finally:
            await feed.stop()

    # concurrency=1: a stateful agent with more would commit offsets past records in flight.
    @app.agent(source, name="score-signals", concurrency=1)
    async def score_signals(stream: Any) -> None:
        async for events in stream.take_events(
            settings.batch_max, within=settings.batch_within_seconds
        ):
            await pipeline.process_batch(events)

    @app.timer(settings.tick_interval_seconds, name="window-ticks")
    async def send_ticks() -> None:
        consumer = app._consumer  # None until the worker has started its consumer
        if consumer is None:
            return
        owned = sorted(tp.partition for tp in consumer.assignment() if tp.topic == names.ticks)
        if not owned:
            return
        if broker.unreachable_since is not None:
            return  # queued, they would only feed the producer's metadata retries; none is owed
        tick = encode_tick(wall_clock_ms())
        try:
            for partition in owned:
                await app.producer.send(names.ticks, None, tick, partition, None, None)
        except Exception as exc:  # the broker is away: the next tick carries the time anyway
            now = time.monotonic()
            if now - tick_failure_logged[0] >= 30.0:
                tick_failure_logged[0] = now
                log.warning("Sending ticks failed (%s); windows close once they get through", exc)

    tick_failure_logged: list[float] = [-30.0]

    expiry = AgentExpiry(pipeline, settings.agent_ttl_seconds)

    @app.task
    async def expire_idle_agents() -> None:
        await expiry.run()

    broker = BrokerWatch(metadata_probe(lambda: kafka_producer().client, names.config))

    @app.task
    async def watch_broker() -> None:
        await broker.run()

    last_reported: list[str] = [""]

    @app.timer(10.0, name="progress-report")
    async def report_progress() -> None:
        report = pipeline.counters.describe()
        if report != last_reported[0]:
            last_reported[0] = report
            log.info("Progress: %s", report)

    takeover: list[asyncio.Task[None] | None] = [None]

    async def take_over(partitions: set[int]) -> None:
        checks = await restore_verified(
            store, settings.kafka_bootstrap_servers, partitions, len(names.signals)
        )
        pipeline.forget_partitions(partitions)  # in-memory indexes are rebuilt from the state
        for partition, check in checks.items():
            # The check decoded every state already: its schedule spares decoding them again.
            pipeline.schedules[partition] = check.schedule
        pipeline.mark_restored(partitions)
        await feed.own(partitions)

    crashes: set[asyncio.Task[None]] = set()

    def crash_on_failure(task: asyncio.Task[None]) -> None:
        error = None if task.cancelled() else task.exception()
        if error is not None:
            # A worker that cannot restore its state must not sit there owning partitions.
            log.error("Taking over partitions failed: %r", error, exc_info=error)
            crash = asyncio.ensure_future(app.crash(error))
            crashes.add(crash)
            crash.add_done_callback(crashes.discard)

    async def cancel_takeover() -> None:
        task, takeover[0] = takeover[0], None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # mode's Signal.connect is typed for plain callables; async receivers are what it awaits.
    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(sender: Any, *args: Any, signal: Any = None, **_: Any) -> None:
        revoked: set[TP] = args[0]
        partitions = {tp.partition for tp in revoked if tp.topic == names.ticks}
        await cancel_takeover()
        pipeline.mark_unrestored(partitions)
        # Before anyone else may take them: finish the batch in flight, make its state durable.
        await feed.release(partitions)
        await pipeline.make_durable()
        pipeline.forget_partitions(partitions)

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def on_assigned(sender: Any, *args: Any, signal: Any = None, **_: Any) -> None:
        assigned: set[TP] = args[0]
        owned = sorted(tp.partition for tp in assigned if tp.topic == names.ticks)
        log.info("Assigned partitions %s of %d", owned, settings.partitions)

    @app.on_rebalance_complete.connect  # type: ignore[arg-type]
    async def on_rebalanced(sender: Any, *args: Any, signal: Any = None, **_: Any) -> None:
        # Faust sends this once the group is settled; the state is restored in the background
        # (Faust waits for this receiver) and processing of a partition waits for its state.
        consumer = app._consumer
        if consumer is None:
            return
        owned = {tp.partition for tp in consumer.assignment() if tp.topic == names.ticks}
        if takeover[0] is not None and not takeover[0].done():
            return  # Faust sends it twice after a recovery: the take-over is under way
        if owned == pipeline.restored == feed.partitions and pipeline.restore_done.is_set():
            return
        await cancel_takeover()
        task = asyncio.ensure_future(take_over(owned))
        task.add_done_callback(crash_on_failure)
        takeover[0] = task

    install_observability(app, pipeline, config, feed, broker)
    install_api(app, settings, table, store, config)
    return TrustApp(app, settings, names, table, pipeline, config, feed)
