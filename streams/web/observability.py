"""Health, readiness and Prometheus metrics, served by every worker's web server.

- ``/healthz``: the process is up and its event loop answers.
- ``/readyz``: 200 once the worker has its partitions, has recovered its tables and has read the
  scoring configuration; 503 with the reasons until then (and during a rebalance).
- ``/metrics``: Prometheus text format. Counters are read from the pipeline's own counters at
  scrape time, so nothing on the hot path is counted twice.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from itertools import accumulate
from typing import Any

from faust.web import Request, Response, View
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from streams.gcpacing import KINDS, GcStats
from streams.kafka.brokerwatch import BrokerWatch
from streams.kafka.faustbridge import faust_consumer
from streams.processing.config_topic import ConfigFollower
from streams.processing.feed import SignalFeed
from streams.processing.pipeline import ScoringPipeline
from streams.scoring.model import DIMENSIONS

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4"
#: Seconds from a signal's record timestamp to its processing.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class LatencyHistogram(Collector):
    """A histogram of seconds, exported as ``name``.

    prometheus_client's Histogram takes a lock and walks every bucket per observation, about a
    microsecond; observed once per signal that was a measurable share of the hot path. Only the
    event loop's thread observes and collects, so plain counters suffice.
    """

    def __init__(
        self, name: str, documentation: str, buckets: tuple[float, ...] = LATENCY_BUCKETS
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._bounds = list(buckets)
        self._counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self._sum = 0.0

    def observe(self, seconds: float) -> None:
        self._counts[bisect_left(self._bounds, seconds)] += 1
        self._sum += seconds

    def collect(self) -> Iterator[Metric]:
        cumulative = list(accumulate(self._counts))
        family = HistogramMetricFamily(
            self._name,
            self._documentation,
            buckets=[
                *(
                    (repr(bound), count)
                    for bound, count in zip(self._bounds, cumulative, strict=False)
                ),
                ("+Inf", cumulative[-1]),
            ],
            sum_value=self._sum,
        )
        yield family


class PipelineCollector(Collector):
    def __init__(
        self,
        app: Any,
        pipeline: ScoringPipeline,
        config: ConfigFollower,
        feed: SignalFeed | None = None,
        broker: BrokerWatch | None = None,
    ) -> None:
        self._app = app
        self._pipeline = pipeline
        self._config = config
        self._feed = feed
        self._broker = broker

    def collect(self) -> Iterator[Metric]:
        counters = self._pipeline.counters
        applied = CounterMetricFamily(
            "trust_signals_applied", "Signals applied to agent state", labels=["dimension"]
        )
        for i, dimension in enumerate(DIMENSIONS):
            applied.add_metric([dimension.value], counters.signals_applied[i])
        yield applied
        for name, documentation, value in (
            (
                "trust_signals_redelivered",
                "Redelivered signals recognised and skipped",
                counters.duplicates_skipped,
            ),
            ("trust_dead_letters", "Records sent to the dead-letter topic", counters.dead_letters),
            ("trust_revocations", "Revocations published", counters.revocations),
            (
                "trust_signals_applied_ahead",
                "Signals applied ahead of other agents' (critical signals, with their agent's "
                "earlier signals)",
                counters.applied_ahead,
            ),
            (
                "trust_windows_closed",
                "Score updates published at window close",
                counters.windows_closed,
            ),
            (
                "trust_updates_republished",
                "Recorded outputs re-published after a redelivery",
                counters.updates_republished,
            ),
            (
                "trust_offset_holes_rewound",
                "Consumer offset holes rewound and re-read",
                self._pipeline.offsets.holes_rewound,
            ),
        ):
            yield CounterMetricFamily(name, documentation, value=value)
        health = self._pipeline.delivery.retrying.health
        yield GaugeMetricFamily(
            "trust_outputs_blocked",
            "1 while a delivery (an output or the changelog) is failing and being retried; "
            "nothing after it counts as done until it succeeds",
            value=1 if health.blocked else 0,
        )
        failures = CounterMetricFamily(
            "trust_output_failures",
            "Failed delivery attempts, by topic (each is retried until it succeeds)",
            labels=["topic"],
        )
        for topic, count in sorted(health.failures.items()):
            failures.add_metric([topic], count)
        yield failures
        rejected = CounterMetricFamily(
            "trust_internal_records_rejected",
            "Records of the internal topics ignored: stale ticks, and malformed or forged records",
            labels=["topic", "kind"],
        )
        for (topic, kind), count in sorted(counters.internal_rejected.items()):
            rejected.add_metric([topic, kind], count)
        yield rejected
        state = self._pipeline.store.counters
        for name, documentation, value in (
            (
                "trust_local_store_resets",
                "Partition databases found damaged, deleted and restored from the changelog",
                state.local_store_resets,
            ),
            (
                "trust_state_entries_dropped",
                "Undecodable state entries still found after a full restore (deleted locally)",
                state.state_entries_dropped,
            ),
            (
                "trust_agents_expired",
                "Idle agents removed under TRUST_AGENT_TTL_DAYS (tombstoned in the changelog)",
                state.agents_expired,
            ),
            (
                "trust_config_records_rejected",
                "Records of the config topic ignored as invalid (the last valid version stays)",
                self._config.rejected_records,
            ),
        ):
            yield CounterMetricFamily(name, documentation, value=value)
        if self._broker is not None:
            yield GaugeMetricFamily(
                "trust_broker_reachable",
                "1 while the Kafka broker answers this worker's probe (every 2 s)",
                value=0 if self._broker.unreachable_since is not None else 1,
            )
        yield GaugeMetricFamily(
            "trust_live_agents",
            "Agents held in the partitions this worker owns",
            value=state.live_agents(self._pipeline.restored),
        )
        rocksdb = GaugeMetricFamily(
            "trust_rocksdb_memory_bytes",
            "Memory RocksDB holds for the agent state, by kind (its own estimates)",
            labels=["kind"],
        )
        for kind, size in self._pipeline.store.rocksdb_memory().items():
            rocksdb.add_metric([kind], size)
        yield rocksdb
        yield GaugeMetricFamily(
            "trust_windows_close_pending",
            "Agents with a window due and not closed yet: closing is behind while this grows",
            value=sum(len(s.pending) for s in self._pipeline.schedules.values()),
        )
        yield GaugeMetricFamily(
            "trust_states_held",
            "Changed agent states held in memory, not yet written",
            value=self._pipeline.store.held_agents(),
        )
        if self._feed is not None:
            yield CounterMetricFamily(
                "trust_signal_reads_throttled",
                "Times reading signals waited for a state write, too many changed states being "
                "held (TRUST_STATE_HELD_MAX_AGENTS): the load outruns the worker",
                value=self._feed.throttled,
            )
        yield GaugeMetricFamily(
            "trust_config_version",
            "Scoring configuration version in force",
            value=self._config.current.version,
        )
        yield GaugeMetricFamily(
            "trust_tick_lag_seconds",
            "How far behind the wall clock the last tick was processed",
            value=counters.tick_lag_ms / 1000,
        )
        yield self._consumer_lag()

    def _consumer_lag(self) -> Metric:
        lag = GaugeMetricFamily(
            "trust_consumer_lag",
            "Records not yet processed, per input partition",
            labels=["topic", "partition"],
        )
        consumer = faust_consumer(self._app)
        if consumer is None:
            return lag
        if self._feed is not None:
            for tp, behind in sorted(self._feed.lag().items()):
                lag.add_metric([tp.topic, str(tp.partition)], behind)
        expected = self._pipeline.offsets.expected
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            position = expected.get((tp.topic, tp.partition))
            if highwater is None or position is None:
                continue
            lag.add_metric([tp.topic, str(tp.partition)], max(0, highwater - position))
        return lag


class GcCollector(Collector):
    """The paced garbage collections (:mod:`streams.gcpacing`): how many, how long."""

    def __init__(self, stats: GcStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats
        count = CounterMetricFamily(
            "trust_gc_collections", "Paced garbage collections, by kind", labels=["kind"]
        )
        seconds = CounterMetricFamily(
            "trust_gc_seconds", "Seconds spent in paced garbage collections", labels=["kind"]
        )
        longest = GaugeMetricFamily(
            "trust_gc_longest_pause_seconds",
            "The longest paced garbage collection so far, by kind",
            labels=["kind"],
        )
        for kind in KINDS:
            count.add_metric([kind], stats.collections[kind])
            seconds.add_metric([kind], stats.seconds[kind])
            longest.add_metric([kind], stats.longest[kind])
        yield from (count, seconds, longest)
        yield GaugeMetricFamily(
            "trust_gc_frozen_objects",
            "Objects held after the last full collection (no other collection walks them)",
            value=stats.frozen,
        )
        yield GaugeMetricFamily(
            "trust_gc_memory_blocks",
            "Memory blocks Python held at the last look (a full collection is due when doubled)",
            value=stats.blocks,
        )


def install(
    app: Any,
    pipeline: ScoringPipeline,
    config: ConfigFollower,
    feed: SignalFeed | None = None,
    broker: BrokerWatch | None = None,
    gc_stats: GcStats | None = None,
) -> None:
    """Register the health, readiness and metrics pages and the latency histogram."""
    registry = CollectorRegistry()
    registry.register(PipelineCollector(app, pipeline, config, feed, broker))
    if gc_stats is not None:
        registry.register(GcCollector(gc_stats))
    latency = LatencyHistogram(
        "trust_processing_latency_seconds",
        "Seconds from a signal's record timestamp until it was applied",
    )
    registry.register(latency)
    pipeline.observe_latency = latency.observe
    revocation_latency = LatencyHistogram(
        "trust_revocation_latency_seconds",
        "Seconds from a revoking critical signal's record timestamp until Kafka confirmed its "
        "revocation",
    )
    registry.register(revocation_latency)
    pipeline.observe_revocation = revocation_latency.observe

    @app.page("/healthz")
    class Healthz(View):
        async def get(self, request: Request) -> Response:
            return self.json({"status": "ok"})

    @app.page("/readyz")
    class Readyz(View):
        async def get(self, request: Request) -> Response:
            waiting = []
            if faust_consumer(app) is None or app.rebalancing:
                waiting.append("joining the consumer group")
            if (
                not app.tables.recovery.completed.is_set()
                or not pipeline.ownership.settled.is_set()
            ):
                waiting.append("restoring agent state")
            if not config.ready.is_set():
                waiting.append("reading the scoring configuration")
            waiting.extend(pipeline.delivery.retrying.health.describe_blocked())
            if broker is not None:
                waiting.extend(broker.describe())
            if waiting:
                return self.json({"ready": False, "waiting_for": waiting}, status=503)
            return self.json({"ready": True, "config_version": config.current.version})

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            # aiohttp takes the charset apart from the content type.
            return self.bytes(generate_latest(registry), content_type=METRICS_CONTENT_TYPE)
