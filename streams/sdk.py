"""Publishing trust signals: the producer side of the contract, for services that judge agents.

A service that judges an agent's action publishes one signal to the topic of the dimension it
judged. :class:`SignalPublisher` does that from async code, :class:`SyncSignalPublisher` from code
that is not::

    async with SignalPublisher("kafka:9092") as publisher:
        await publisher.record_policy_compliance("did:mesh:agent-42", compliant=False,
                                                 policy_name="no-external-email")

    with SyncSignalPublisher("kafka:9092") as publisher:
        publisher.record_output_quality("did:mesh:agent-42", accepted=True, consumer="billing")

Every signal is validated against :class:`streams.messages.Signal` before anything is sent, so a
signal the worker would dead-letter fails in the caller, as :class:`InvalidSignal`, naming the
field and the problem. The convenience calls (``record_policy_compliance`` and the rest) keep the
reference engine's values, sources and details, so scores computed from them agree with it.

Records are keyed by the agent's DID as UTF-8 bytes and placed by Kafka's default partitioner
(murmur2 of the key bytes, as the Java client does). This is not a detail: the worker
co-partitions every topic by agent, keeps each agent's state with the partition its signals
arrive on, and publishes the agent's score updates and revocations on that same partition number.
A signal placed by any other rule would reach a partition, and possibly a worker, that holds a
different copy of the agent's state: the agent would be scored twice, each time on part of its
signals. So the partitioner cannot be configured here.

The producer is idempotent with ``acks="all"``: a retried batch is not written twice, and a signal
is acknowledged only once every in-sync replica has it. Sending is batched (``linger_ms``); a
``record_*`` call returns once the producer has accepted the record, and :meth:`flush` waits until
every accepted record is acknowledged, raising :class:`PublishFailed` for any that were not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final, Self, TypeVar

import orjson
from aiokafka.errors import UnknownTopicOrPartitionError
from aiokafka.partitioner import DefaultPartitioner, murmur2
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from .errors import TopicLayoutError, TrustServiceError
from .kafka import clients
from .messages import DID_RE, Signal
from .scoring.formulas import resource_efficiency
from .scoring.model import DIMENSION_INDEX, DIMENSIONS, Dimension
from .settings import Settings
from .topics import TopicNames

log = logging.getLogger(__name__)

__all__ = [
    "InvalidSignal",
    "PreparedSignal",
    "PublishFailed",
    "PublisherNotRunning",
    "SignalPublisher",
    "SyncSignalPublisher",
    "collaboration_signal",
    "output_quality_signal",
    "partition_for",
    "policy_compliance_signal",
    "prepare_signal",
    "resource_usage_signal",
    "security_event_signal",
]

DEFAULT_TOPIC_PREFIX: Final = "agentmesh."
DEFAULT_CLIENT_ID: Final = "trust-signal-publisher"
#: The worker dead-letters larger values; the same default as ``TRUST_MAX_MESSAGE_BYTES``.
DEFAULT_MAX_MESSAGE_BYTES: Final[int] = Settings.model_fields["max_message_bytes"].default

#: Producer options the contract fixes. Changing any of them would break ordering, exactly-once
#: writes on retry, or the placement of an agent's records, so they are refused, not overridden.
_FIXED_OPTIONS: Final = frozenset(
    {
        "bootstrap_servers",
        "client_id",
        "linger_ms",
        "enable_idempotence",
        "acks",
        "partitioner",
        "key_serializer",
        "value_serializer",
        "transactional_id",
        "loop",
    }
)

_T = TypeVar("_T")


class InvalidSignal(TrustServiceError, ValueError):
    """A signal broke the contract and was not sent. The message names the field and the problem."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class PublisherNotRunning(TrustServiceError, RuntimeError):
    """The publisher was never started or is already closed: use ``async with`` / ``with``."""


class PublishFailed(TrustServiceError):
    """Records the producer accepted were not acknowledged by the broker; they may be lost.

    ``failures`` holds the error of each record that failed. Records published after them are
    unaffected; resend the lost ones if the signals matter.
    """

    def __init__(self, failures: list[BaseException]) -> None:
        first = failures[0]
        super().__init__(
            f"{len(failures)} signal(s) were not acknowledged by the broker; "
            f"first error: {type(first).__name__}: {first}"
        )
        self.failures = failures


# -- building signals (pure) ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PreparedSignal:
    """A validated signal encoded as the record the worker expects: dimension, key and value."""

    dimension: Dimension
    key: bytes
    value: bytes


def partition_for(agent_did: str, partitions: int) -> int:
    """The partition of every topic on which ``agent_did`` lives, given the topics' count.

    The Java client's rule (``toPositive(murmur2(key)) % partitions``), which is what the
    producer's default partitioner applies to the UTF-8 key.
    """
    if partitions < 1:
        raise ValueError(f"partitions must be at least 1, got {partitions}")
    return int(murmur2(agent_did.encode()) & 0x7FFFFFFF) % partitions


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _problem(error: ErrorDetails) -> tuple[str, str]:
    """(field, problem) for one pydantic error, worded for someone calling the SDK."""
    field = ".".join(str(part) for part in error["loc"]) or "(signal)"
    kind = error["type"]
    given = _shown(error["input"])
    if field == "agent_did" and kind == "string_pattern_mismatch":
        return field, (
            f"{given} is not a DID: expected did:<method>:<method-specific-id>, "
            "e.g. did:mesh:agent-42"
        )
    if field == "value" and kind == "float_type":
        kind_of = "a bool" if isinstance(error["input"], bool) else type(error["input"]).__name__
        return field, f"must be a number from 0.0 (bad) to 1.0 (good), not {kind_of} {given}"
    if field == "value" and kind in {"finite_number", "greater_than_equal", "less_than_equal"}:
        return field, f"must be a number from 0.0 (bad) to 1.0 (good), got {given}"
    if field == "timestamp" and kind == "timezone_aware":
        return field, (
            f"{given} has no time zone; pass an aware datetime, e.g. datetime.now(UTC), so it "
            "cannot be read in the wrong zone"
        )
    if field == "timestamp" and kind == "datetime_type":
        return field, f"must be a timezone-aware datetime, got {given}"
    message = error["msg"].removeprefix("Value error, ")
    return field, f"{message[:1].lower()}{message[1:]} (got {given})"


def _invalid(exc: ValidationError) -> InvalidSignal:
    problems = [_problem(error) for error in exc.errors(include_url=False)]
    field, problem = problems[0]
    if len(problems) > 1:
        problem += "; also " + "; ".join(f"{f}: {p}" for f, p in problems[1:])
    return InvalidSignal(field, problem)


def _dimension(dimension: Dimension | str) -> Dimension:
    if isinstance(dimension, str) and dimension in DIMENSION_INDEX:
        return Dimension(dimension)
    names = ", ".join(d.value for d in DIMENSIONS)
    raise InvalidSignal("dimension", f"{_shown(dimension)} is not one of {names}")


def prepare_signal(
    agent_did: str,
    dimension: Dimension | str,
    value: float,
    source: str,
    *,
    details: str | None = None,
    trace_id: str | None = None,
    signal_id: str | None = None,
    timestamp: datetime | None = None,
) -> PreparedSignal:
    """Validate one signal and encode it as its record; :class:`InvalidSignal` if it is not valid.

    The body is the :class:`~streams.messages.Signal` as JSON, with ``dimension`` included (the
    worker checks it against the topic) and absent optional fields left out. A timestamp is written
    in UTC with a ``Z``; without one, the worker uses the record's timestamp, which the producer
    sets when the record is accepted.
    """
    checked = _dimension(dimension)
    try:
        signal = Signal.model_validate(
            {
                "agent_did": agent_did,
                "value": value,
                "source": source,
                "dimension": checked,
                "details": details,
                "trace_id": trace_id,
                "signal_id": signal_id,
                "timestamp": timestamp,
            }
        )
    except ValidationError as exc:
        raise _invalid(exc) from None
    body: dict[str, Any] = {
        "agent_did": signal.agent_did,
        # An int such as 1 passes validation; the wire carries it as the float it stands for.
        "value": float(signal.value),
        "source": signal.source,
        "dimension": checked.value,
    }
    for name in ("details", "trace_id", "signal_id"):
        if (field_value := getattr(signal, name)) is not None:
            body[name] = field_value
    if signal.timestamp is not None:
        body["timestamp"] = signal.timestamp.astimezone(UTC)
    return PreparedSignal(
        checked, signal.agent_did.encode(), orjson.dumps(body, option=orjson.OPT_UTC_Z)
    )


def _require_bool(name: str, value: object) -> bool:
    # The reference engine takes any truthy value; here "no" or 0.4 is a caller's bug, not True.
    if not isinstance(value, bool):
        raise InvalidSignal(name, f"must be True or False, got {_shown(value)}")
    return value


def _require_text(name: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidSignal(name, f"must be a non-blank string, got {_shown(value)}")
    return value


def _require_count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidSignal(name, f"must be a non-negative integer, got {_shown(value)}")
    return value


def policy_compliance_signal(
    agent_did: str, compliant: bool, policy_name: str | None = None
) -> PreparedSignal:
    """Did the action keep to policy? 1.0 if so, else 0.0; from the policy engine."""
    return prepare_signal(
        agent_did,
        Dimension.POLICY_COMPLIANCE,
        1.0 if _require_bool("compliant", compliant) else 0.0,
        "policy_engine",
        details=f"Policy: {policy_name}" if policy_name else None,
    )


def resource_usage_signal(
    agent_did: str, tokens_used: int, tokens_budget: int, compute_ms: int, compute_budget_ms: int
) -> PreparedSignal:
    """Was token and compute use proportionate? 1.0 within budget, less the further over it."""
    used = _require_count("tokens_used", tokens_used)
    budget = _require_count("tokens_budget", tokens_budget)
    compute = _require_count("compute_ms", compute_ms)
    compute_budget = _require_count("compute_budget_ms", compute_budget_ms)
    return prepare_signal(
        agent_did,
        Dimension.RESOURCE_EFFICIENCY,
        resource_efficiency(used, budget, compute, compute_budget),
        "resource_monitor",
        details=f"tokens={used}/{budget}, compute={compute}/{compute_budget}ms",
    )


def output_quality_signal(
    agent_did: str, accepted: bool, consumer: str, rejection_reason: str | None = None
) -> PreparedSignal:
    """Did the downstream ``consumer`` accept the agent's output? 1.0 if so, else 0.0."""
    return prepare_signal(
        agent_did,
        Dimension.OUTPUT_QUALITY,
        1.0 if _require_bool("accepted", accepted) else 0.0,
        f"consumer:{_require_text('consumer', consumer)}",
        details=rejection_reason,
    )


def security_event_signal(agent_did: str, within_boundary: bool, event_type: str) -> PreparedSignal:
    """Did the agent stay within its trust boundary? 1.0 if so, else 0.0; from the monitor."""
    return prepare_signal(
        agent_did,
        Dimension.SECURITY_POSTURE,
        1.0 if _require_bool("within_boundary", within_boundary) else 0.0,
        "security_monitor",
        details=_require_text("event_type", event_type),
    )


def collaboration_signal(agent_did: str, handoff_successful: bool, peer_did: str) -> PreparedSignal:
    """Did a handoff between the agent and ``peer_did`` complete? 1.0 if so, else 0.0."""
    if not isinstance(peer_did, str) or DID_RE.match(peer_did) is None:
        raise InvalidSignal(
            "peer_did", f"{_shown(peer_did)} is not a DID: expected did:<method>:<id>"
        )
    return prepare_signal(
        agent_did,
        Dimension.COLLABORATION_HEALTH,
        1.0 if _require_bool("handoff_successful", handoff_successful) else 0.0,
        f"collaboration:{peer_did}",
    )


# -- the async publisher --------------------------------------------------------------------------


class SignalPublisher:
    """Publishes trust signals to Kafka from async code. Use it as ``async with``.

    Entering starts the producer; leaving flushes every accepted signal and stops it, also when
    the block raises (the block's error is the one that propagates; a failed flush is then logged).
    ``producer_options`` are passed to :class:`aiokafka.AIOKafkaProducer` (for example
    ``request_timeout_ms`` or ``security_protocol``), except the ones the contract fixes.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        topic_prefix: str = DEFAULT_TOPIC_PREFIX,
        linger_ms: int = 5,
        client_id: str = DEFAULT_CLIENT_ID,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        **producer_options: Any,
    ) -> None:
        fixed = sorted(_FIXED_OPTIONS & producer_options.keys())
        if fixed:
            raise ValueError(
                f"producer option(s) {', '.join(fixed)} cannot be set: the signal contract fixes "
                "them (see streams.sdk)"
            )
        if linger_ms < 0:
            raise ValueError(f"linger_ms must not be negative, got {linger_ms}")
        # Idempotence and acks="all" come with every producer (streams.kafka.clients).
        self._connection = clients.KafkaConnection(bootstrap_servers)
        self._client_id = client_id
        self._options: dict[str, Any] = {
            **producer_options,
            "linger_ms": linger_ms,
            "partitioner": DefaultPartitioner(),
        }
        self._topics = TopicNames(topic_prefix)
        self._max_message_bytes = max_message_bytes
        self._producer: Any = None
        self._closed = False
        self._pending: set[asyncio.Future[Any]] = set()
        self._failures: list[BaseException] = []

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> Self:
        """A publisher for the brokers, topic prefix and size limit the worker is set up with."""
        return cls(
            settings.kafka_bootstrap_servers,
            topic_prefix=settings.topic_prefix,
            max_message_bytes=settings.max_message_bytes,
            **options,
        )

    @property
    def topic_prefix(self) -> str:
        return self._topics.prefix

    @property
    def running(self) -> bool:
        return self._producer is not None

    def topic_for(self, dimension: Dimension | str) -> str:
        """The signal topic of ``dimension``."""
        return self._topics.signals[DIMENSION_INDEX[_dimension(dimension).value]]

    async def start(self) -> None:
        """Connect to the brokers. Starting a running publisher does nothing."""
        if self._producer is not None:
            return
        if self._closed:
            raise PublisherNotRunning("this publisher was closed; create a new one")
        # Built here, not in __init__: aiokafka binds a producer to the running event loop.
        producer = clients.producer(
            self._connection,
            purpose="signal-publisher",
            client_id=self._client_id,
            **self._options,
        )
        try:
            await producer.start()
        except BaseException:
            # Release what the failed start opened; its own error is the one worth reporting.
            with contextlib.suppress(Exception):
                await producer.stop()
            raise
        self._producer = producer

    async def publish(self, signal: PreparedSignal) -> None:
        """Hand one prepared signal to the producer; returns once it is accepted (enqueued)."""
        self.check_size(signal)
        producer = self._require_running()
        topic = self.topic_for(signal.dimension)
        try:
            delivery = await producer.send(topic, value=signal.value, key=signal.key)
        except UnknownTopicOrPartitionError as exc:
            raise TopicLayoutError(
                f"topic {topic} does not exist and the broker does not create topics on use: "
                "start a worker with the same TRUST_TOPIC_PREFIX, or run `trust-streams topics`"
            ) from exc
        self._pending.add(delivery)
        delivery.add_done_callback(self._on_delivered)

    def check_size(self, signal: PreparedSignal) -> None:
        """:class:`InvalidSignal` if the worker would dead-letter the record for its size."""
        if len(signal.value) > self._max_message_bytes:
            raise InvalidSignal(
                "details",
                f"the encoded signal is {len(signal.value)} bytes, over the worker's limit of "
                f"{self._max_message_bytes} (TRUST_MAX_MESSAGE_BYTES); shorten the text fields",
            )

    async def record_signal(
        self,
        agent_did: str,
        dimension: Dimension | str,
        value: float,
        source: str,
        *,
        details: str | None = None,
        trace_id: str | None = None,
        signal_id: str | None = None,
        timestamp: datetime | None = None,
    ) -> None:
        """Publish one signal; see :func:`prepare_signal` for what is checked before sending."""
        await self.publish(
            prepare_signal(
                agent_did,
                dimension,
                value,
                source,
                details=details,
                trace_id=trace_id,
                signal_id=signal_id,
                timestamp=timestamp,
            )
        )

    async def record_policy_compliance(
        self, agent_did: str, compliant: bool, policy_name: str | None = None
    ) -> None:
        await self.publish(policy_compliance_signal(agent_did, compliant, policy_name))

    async def record_resource_usage(
        self,
        agent_did: str,
        tokens_used: int,
        tokens_budget: int,
        compute_ms: int,
        compute_budget_ms: int,
    ) -> None:
        await self.publish(
            resource_usage_signal(
                agent_did, tokens_used, tokens_budget, compute_ms, compute_budget_ms
            )
        )

    async def record_output_quality(
        self, agent_did: str, accepted: bool, consumer: str, rejection_reason: str | None = None
    ) -> None:
        await self.publish(output_quality_signal(agent_did, accepted, consumer, rejection_reason))

    async def record_security_event(
        self, agent_did: str, within_boundary: bool, event_type: str
    ) -> None:
        await self.publish(security_event_signal(agent_did, within_boundary, event_type))

    async def record_collaboration(
        self, agent_did: str, handoff_successful: bool, peer_did: str
    ) -> None:
        await self.publish(collaboration_signal(agent_did, handoff_successful, peer_did))

    async def flush(self) -> None:
        """Wait until every accepted signal is acknowledged; :class:`PublishFailed` if not."""
        producer = self._require_running()
        await producer.flush()
        if self._pending:
            # The producer resolves a batch's future before the per-record callbacks have run.
            await asyncio.wait(set(self._pending))
        self._raise_failures()

    async def stop(self) -> None:
        """Flush, then close the connections; :class:`PublishFailed` if a signal was not delivered.

        Stopping a stopped publisher does nothing.
        """
        producer = self._producer
        if producer is None:
            return
        try:
            await producer.flush()
            if self._pending:
                await asyncio.wait(set(self._pending))
        finally:
            self._producer = None
            self._closed = True
            await producer.stop()
            unresolved = [f for f in self._pending if not f.done()]
            for future in unresolved:
                future.cancel()
            self._failures.extend(
                PublisherNotRunning("the producer stopped before the broker acknowledged it")
                for _ in unresolved
            )
        self._raise_failures()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is None:
            await self.stop()
            return
        try:
            await self.stop()
        except Exception:
            log.exception("Publishing the signals accepted before %r failed", exc)

    def _require_running(self) -> Any:
        if self._producer is None:
            raise PublisherNotRunning(
                "the publisher is closed"
                if self._closed
                else "the publisher is not started: "
                "use `async with SignalPublisher(...)` or await start() first"
            )
        return self._producer

    def _on_delivered(self, future: asyncio.Future[Any]) -> None:
        self._pending.discard(future)
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            self._failures.append(error)

    def _raise_failures(self) -> None:
        if self._failures:
            failures, self._failures = self._failures, []
            raise PublishFailed(failures)


# -- the synchronous facade -----------------------------------------------------------------------


class SyncSignalPublisher:
    """:class:`SignalPublisher` for code that is not async. Use it as ``with``, or call close().

    It runs its own event loop in a background thread. Each ``record_*`` call validates in the
    caller's thread (so :class:`InvalidSignal` is raised there and nothing is sent), then blocks
    until the producer has accepted the record; :meth:`flush` blocks until every accepted record
    is acknowledged. Calls from several threads are safe; each thread's signals keep their order.
    Connecting happens in the constructor, so a wrong address fails there.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        topic_prefix: str = DEFAULT_TOPIC_PREFIX,
        linger_ms: int = 5,
        client_id: str = DEFAULT_CLIENT_ID,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        **producer_options: Any,
    ) -> None:
        self._publisher = SignalPublisher(
            bootstrap_servers,
            topic_prefix=topic_prefix,
            linger_ms=linger_ms,
            client_id=client_id,
            max_message_bytes=max_message_bytes,
            **producer_options,
        )
        self._lock = threading.Lock()
        self._closed = False
        self._loop = asyncio.new_event_loop()
        # A daemon thread, so a publisher someone forgot to close cannot keep the process alive.
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"{client_id}-loop", daemon=True
        )
        self._thread.start()
        try:
            self._call(self._publisher.start())
        except BaseException:
            self._closed = True
            self._stop_loop()
            raise

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> Self:
        """A publisher for the brokers, topic prefix and size limit the worker is set up with."""
        return cls(
            settings.kafka_bootstrap_servers,
            topic_prefix=settings.topic_prefix,
            max_message_bytes=settings.max_message_bytes,
            **options,
        )

    @property
    def topic_prefix(self) -> str:
        return self._publisher.topic_prefix

    def topic_for(self, dimension: Dimension | str) -> str:
        return self._publisher.topic_for(dimension)

    def publish(self, signal: PreparedSignal) -> None:
        """Hand one prepared signal to the producer; returns once it is accepted (enqueued)."""
        self._publisher.check_size(signal)
        self._call(self._publisher.publish(signal))

    def record_signal(
        self,
        agent_did: str,
        dimension: Dimension | str,
        value: float,
        source: str,
        *,
        details: str | None = None,
        trace_id: str | None = None,
        signal_id: str | None = None,
        timestamp: datetime | None = None,
    ) -> None:
        self.publish(
            prepare_signal(
                agent_did,
                dimension,
                value,
                source,
                details=details,
                trace_id=trace_id,
                signal_id=signal_id,
                timestamp=timestamp,
            )
        )

    def record_policy_compliance(
        self, agent_did: str, compliant: bool, policy_name: str | None = None
    ) -> None:
        self.publish(policy_compliance_signal(agent_did, compliant, policy_name))

    def record_resource_usage(
        self,
        agent_did: str,
        tokens_used: int,
        tokens_budget: int,
        compute_ms: int,
        compute_budget_ms: int,
    ) -> None:
        self.publish(
            resource_usage_signal(
                agent_did, tokens_used, tokens_budget, compute_ms, compute_budget_ms
            )
        )

    def record_output_quality(
        self, agent_did: str, accepted: bool, consumer: str, rejection_reason: str | None = None
    ) -> None:
        self.publish(output_quality_signal(agent_did, accepted, consumer, rejection_reason))

    def record_security_event(self, agent_did: str, within_boundary: bool, event_type: str) -> None:
        self.publish(security_event_signal(agent_did, within_boundary, event_type))

    def record_collaboration(self, agent_did: str, handoff_successful: bool, peer_did: str) -> None:
        self.publish(collaboration_signal(agent_did, handoff_successful, peer_did))

    def flush(self) -> None:
        """Block until every accepted signal is acknowledged; :class:`PublishFailed` if not."""
        self._call(self._publisher.flush())

    def close(self) -> None:
        """Flush, stop the producer and the background loop. Closing twice does nothing."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._call(self._publisher.stop(), closing=True)
        finally:
            self._stop_loop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
            return
        try:
            self.close()
        except Exception:
            log.exception("Publishing the signals accepted before %r failed", exc)

    def _call(self, work: Coroutine[Any, Any, _T], *, closing: bool = False) -> _T:
        if threading.current_thread() is self._thread:
            work.close()
            raise RuntimeError(
                "SyncSignalPublisher was called from its own event loop; from async code, use "
                "SignalPublisher instead"
            )
        if self._closed and not closing:
            work.close()
            raise PublisherNotRunning("the publisher is closed")
        return asyncio.run_coroutine_threadsafe(work, self._loop).result()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
