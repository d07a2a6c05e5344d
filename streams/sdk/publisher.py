"""The async publisher: one idempotent ``acks="all"`` producer, started and flushed by its user."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any, Final, ParamSpec, Self

from aiokafka.errors import UnknownTopicOrPartitionError
from aiokafka.partitioner import DefaultPartitioner
from pydantic import SecretStr

from streams.errors import TopicLayoutError
from streams.kafka import clients
from streams.kafka.security import KafkaSecurity, SaslMechanism, SecurityProtocol
from streams.kafka.topics import TopicNames
from streams.scoring.model import DIMENSION_INDEX, Dimension
from streams.sdk.errors import InvalidSignal, PublisherNotRunning, PublishFailed
from streams.sdk.recorder import SignalRecorder
from streams.sdk.signals import PreparedSignal, checked_dimension
from streams.settings import Settings

log = logging.getLogger("streams.sdk")

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
#: aiokafka's security options: given as the publisher's own parameters instead, checked.
_SECURITY_OPTIONS: Final = frozenset(
    {
        "security_protocol",
        "ssl_context",
        "sasl_mechanism",
        "sasl_plain_username",
        "sasl_plain_password",
    }
)

P = ParamSpec("P")


class SignalPublisher(SignalRecorder[Coroutine[Any, Any, None]]):
    """Publishes trust signals to Kafka from async code. Use it as ``async with``.

    Entering starts the producer; leaving flushes every accepted signal and stops it, also when
    the block raises (the block's error is the one that propagates; a failed flush is then logged).

    The security parameters are the worker's ``TRUST_KAFKA_*`` settings (see
    :meth:`from_settings`): ``security_protocol`` PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL;
    ``sasl_mechanism`` PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 with ``sasl_username`` and
    ``sasl_password``; ``ssl_cafile`` (the CA that signed the brokers' certificates; default the
    system's), ``ssl_certfile`` with ``ssl_keyfile`` for a client certificate; the broker's
    certificate must name the host unless ``ssl_check_hostname`` is false. A combination that
    would connect with less than asked for raises :class:`~streams.errors.InvalidSettings`.
    ``producer_options`` are passed to :class:`aiokafka.AIOKafkaProducer` (for example
    ``request_timeout_ms``), except the ones the contract fixes and the security ones.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        topic_prefix: str = DEFAULT_TOPIC_PREFIX,
        linger_ms: int = 5,
        client_id: str = DEFAULT_CLIENT_ID,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        security_protocol: SecurityProtocol = "PLAINTEXT",
        sasl_mechanism: SaslMechanism | None = None,
        sasl_username: str | None = None,
        sasl_password: str | SecretStr | None = None,
        ssl_cafile: str | Path | None = None,
        ssl_certfile: str | Path | None = None,
        ssl_keyfile: str | Path | None = None,
        ssl_check_hostname: bool = True,
        **producer_options: Any,
    ) -> None:
        fixed = sorted(_FIXED_OPTIONS & producer_options.keys())
        if fixed:
            raise ValueError(
                f"producer option(s) {', '.join(fixed)} cannot be set: the signal contract fixes "
                "them (see streams.sdk)"
            )
        raw = sorted(_SECURITY_OPTIONS & producer_options.keys())
        if raw:
            raise ValueError(
                f"producer option(s) {', '.join(raw)} cannot be set: give security_protocol, "
                "sasl_mechanism, sasl_username, sasl_password and ssl_* as the publisher's own "
                "parameters"
            )
        if linger_ms < 0:
            raise ValueError(f"linger_ms must not be negative, got {linger_ms}")
        security = KafkaSecurity(
            security_protocol=security_protocol,
            sasl_mechanism=sasl_mechanism,
            sasl_username=sasl_username,
            sasl_password=(
                SecretStr(sasl_password) if isinstance(sasl_password, str) else sasl_password
            ),
            ssl_cafile=_path(ssl_cafile),
            ssl_certfile=_path(ssl_certfile),
            ssl_keyfile=_path(ssl_keyfile),
            ssl_check_hostname=ssl_check_hostname,
        ).checked()
        # Idempotence and acks="all" come with every producer (streams.kafka.clients).
        self._connection = clients.KafkaConnection(bootstrap_servers, security=security)
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

    @property
    def topic_prefix(self) -> str:
        return self._topics.prefix

    @property
    def running(self) -> bool:
        return self._producer is not None

    def topic_for(self, dimension: Dimension | str) -> str:
        """The signal topic of ``dimension``."""
        return self._topics.signals[DIMENSION_INDEX[checked_dimension(dimension).value]]

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

    async def _record(
        self, build: Callable[P, PreparedSignal], *args: P.args, **kwargs: P.kwargs
    ) -> None:
        # Built when awaited, as any coroutine's work: an invalid signal raises at the await.
        await self.publish(build(*args, **kwargs))

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

    @property
    def security(self) -> KafkaSecurity:
        """How this publisher connects (its password masked in every repr)."""
        return self._connection.security

    def _raise_failures(self) -> None:
        if self._failures:
            failures, self._failures = self._failures, []
            raise PublishFailed(failures)


def _path(value: str | Path | None) -> Path | None:
    return None if value is None else Path(value)
