"""Faust wiring: the app, its topics and table, the scoring agent and the tick timer.

All decisions live in :mod:`streams.processing.pipeline` and :mod:`streams.scoring`; this module
only connects them to Faust.
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

from streams.gcpacing import PacedCollection
from streams.kafka import clients, faustbridge
from streams.kafka.brokerwatch import BrokerWatch, metadata_probe
from streams.kafka.clients import KafkaConnection, faust_broker_options
from streams.kafka.delivery import Delivery, DeliveryHealth, ProducerLane, Retrying
from streams.kafka.topics import TopicNames
from streams.processing.closing import encode_tick
from streams.processing.config_topic import ConfigFollower
from streams.processing.expiry import AgentExpiry
from streams.processing.feed import SignalFeed
from streams.processing.intake import SignalIntake
from streams.processing.ownership import Ownership
from streams.processing.pipeline import ScoringPipeline, wall_clock_ms
from streams.settings import Settings
from streams.state.restorers import RestoreProcesses
from streams.state.store import StateStore
from streams.web.advertise import advertised_url
from streams.web.api import install as install_api
from streams.web.dashboard import install as install_dashboard
from streams.web.observability import install as install_observability

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
    #: Warmed up before the worker starts: the first take-over restores in them.
    restorers: RestoreProcesses


def create_app(settings: Settings) -> TrustApp:
    names = TopicNames(settings.topic_prefix)
    kafka = KafkaConnection.from_settings(settings)
    own_url = advertised_url(
        settings.web_advertised_url,
        settings.web_host,
        settings.web_port,
        settings.kafka_bootstrap_servers,
    )
    log.info("Other workers reach this one's HTTP API at %s", own_url)
    app = faust.App(
        settings.app_id,
        # Brokers, client id, acks, compression, fetch sizes and timeouts: streams.kafka.clients.
        **faust_broker_options(settings),
        store="rocksdb://",
        datadir=str(settings.state_dir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        key_serializer="raw",
        value_serializer="raw",
        stream_buffer_maxsize=settings.batch_max,
        table_standby_replicas=0,
        web_enabled=True,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        # How the other workers reach this one when they forward a request about our agents:
        # never the bind address, which is 0.0.0.0 in a container (streams/web/advertise.py).
        canonical_url=own_url,
        web_in_thread=False,
        # Faust's /router/ (the cluster's layout) and /table/ (table contents) views: off. The
        # API forwards by the assignment itself (streams/web/forwarding.py), not through them.
        web_router_enabled=False,
        web_tables_enabled=False,
        web_stats_enabled=False,
        web_graph_enabled=False,
        web_metrics_enabled=False,
    )
    # Never written: it only tells Faust's router which worker owns which agent (the HTTP API
    # forwards requests by it). The state itself lives in streams.state.store.
    table = app.Table(
        STATE_TABLE,
        default=None,
        key_type=bytes,  # raw DID bytes: the same bytes producers partition by
        value_type=bytes,
        partitions=settings.partitions,
    )
    config = ConfigFollower(kafka, names.config, settings.scoring_config)

    # The AIOKafkaProducer behind Faust's: the changelog and every output go through it, and each
    # delivery is confirmed (see streams.kafka.delivery).
    def kafka_producer() -> Any:
        return faustbridge.kafka_producer(app)

    retrying = Retrying(DeliveryHealth())
    # Revocations never wait behind the score updates and states of a window's close.
    revocation_lane = ProducerLane(
        lambda: clients.producer(kafka, purpose="revocations", linger_ms=0),
        name=names.revocations,
    )
    store = StateStore(
        state_dir=settings.state_dir,
        changelog_topic=names.agent_state,
        producer=kafka_producer,
        cache_agents=settings.state_cache_agents,
        cache_bytes=settings.state_cache_mb * 1024 * 1024,
        rocksdb_memory_bytes=settings.rocksdb_memory_mb * 1024 * 1024,
        delivery=retrying,
    )
    # The one record of which partitions this worker owns (see streams/processing/ownership.py).
    ownership = Ownership()
    pipeline = ScoringPipeline(
        app=app,
        ownership=ownership,
        store=store,
        names=names,
        windows=settings.window_policy,
        config=config.config,
        config_at=config.at,
        config_ready=config.ready,
        merge_wait_ms=round(settings.signal_merge_wait_seconds * 1000),
        release_max=settings.batch_max,
        intake=SignalIntake(
            max_bytes=settings.max_message_bytes,
            partitions=settings.partitions,
            future_tolerance_ms=settings.window_policy.grace_ms,
        ),
        delivery=Delivery(kafka_producer, retrying, lanes={names.revocations: revocation_lane}),
        tick_tolerance_ms=round(settings.tick_tolerance_seconds * 1000),
        dead_letter_kept_bytes=settings.dead_letter_value_bytes,
        rewind=lambda topic, partition, offset: faustbridge.rewind(app, topic, partition, offset),
    )
    # Signals are read by the feed (see streams/processing/feed.py); Faust's stream carries only
    # the ticks and commands, and its consumer group decides which partitions this worker owns.
    feed = SignalFeed(
        kafka=kafka,
        topics=names.signals,
        process=pipeline.process_records,
        make_durable=pipeline.make_durable,
        positions=pipeline.signal_positions,
        batch_max=settings.batch_max,
        fetch_bytes_per_partition=settings.signal_fetch_bytes_per_partition,
        durable_interval=settings.state_flush_seconds,
        held_states=store.held_agents,
        max_held_states=settings.state_held_max_agents,
        merge=pipeline.merge,
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
    async def start_revocation_lane() -> None:
        await revocation_lane.run()

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
        owned = sorted(ownership.assigned)
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

    collection = PacedCollection()

    @app.task
    async def collect_garbage() -> None:
        await collection.run()

    last_reported: list[str] = [""]

    @app.timer(10.0, name="progress-report")
    async def report_progress() -> None:
        report = pipeline.counters.describe()
        if report != last_reported[0]:
            last_reported[0] = report
            log.info("Progress: %s", report)

    takeover: list[asyncio.Task[None] | None] = [None]
    restorers = RestoreProcesses(settings.restore_processes, settings.log_level)

    async def take_over(partitions: set[int]) -> None:
        checks = await restorers.restore(store, kafka, partitions, len(names.signals))
        pipeline.forget_partitions(partitions)  # in-memory indexes are rebuilt from the state
        for partition, check in checks.items():
            # The check decoded every state already: its schedule spares decoding them again.
            pipeline.schedules[partition] = check.schedule
        ownership.take_over(partitions)
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
        # A rebalance begins: the take-over it ends in will find its processes started.
        await restorers.warm_up(settings.partitions)
        ownership.revoke(partitions)
        # Before anyone else may take them: finish the batch in flight, make its state durable.
        await feed.release(partitions)
        await pipeline.make_durable()
        pipeline.forget_partitions(partitions)

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def on_assigned(sender: Any, *args: Any, signal: Any = None, **_: Any) -> None:
        assigned: set[TP] = args[0]
        owned = sorted(tp.partition for tp in assigned if tp.topic == names.ticks)
        ownership.assign(owned)
        log.info("Assigned partitions %s of %d", owned, settings.partitions)

    @app.on_rebalance_complete.connect  # type: ignore[arg-type]
    async def on_rebalanced(sender: Any, *args: Any, signal: Any = None, **_: Any) -> None:
        # Faust sends this once the group is settled; the state is restored in the background
        # (Faust waits for this receiver) and processing of a partition waits for its state.
        if faustbridge.faust_consumer(app) is None:
            return
        if takeover[0] is not None and not takeover[0].done():
            return  # Faust sends it twice after a recovery: the take-over is under way
        if ownership.up_to_date and feed.partitions == ownership.owned:
            return
        await cancel_takeover()
        task = asyncio.ensure_future(take_over(set(ownership.assigned)))
        task.add_done_callback(crash_on_failure)
        takeover[0] = task

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def write_before_stopping(sender: Any, *args: Any, **_: Any) -> None:
        # Faust stops its producer before it cancels the tasks, so the feed's own stop (in its
        # task's finally) would find no producer for the final write of the states it holds:
        # stop it here, while Faust's consumer is stopped and its producer still runs.
        await feed.stop()
        await revocation_lane.stop()
        await restorers.release()

    install_observability(app, pipeline, config, feed, broker, collection.stats)
    api = install_api(
        app,
        settings,
        table,
        store,
        config,
        ownership,
        own_url,
        scoring_busy=pipeline.closing.windows_due,
    )
    install_dashboard(app, settings, api.tokens)
    return TrustApp(app, settings, names, table, pipeline, config, feed, restorers)
