"""The one place that builds Kafka clients: producers, consumers, admin clients, and Faust's.

Every client of the service gets its options here, so they cannot drift apart:

- the brokers, and a client id ``<prefix>-<purpose>`` (the prefix is the app id), so that the
  broker's logs and quotas tell the worker's feed from its restore, a console command or the demo;
- every producer is idempotent with ``acks="all"`` (a retried batch is not written twice, and a
  record counts as sent once every in-sync replica has it) and compresses with
  ``TRUST_COMPRESSION``; nothing here produces records that may be lost;
- every consumer reads with ``isolation_level="read_committed"`` (records of an aborted
  transaction are never read as data), with no consumer group and no offset commits: every
  reader of the service places itself (see :mod:`streams.processing.feed` and
  :mod:`streams.state.restore`).

Those guarantees are refused as overrides (:class:`ValueError`), not silently replaced. What a
client may tune for its purpose (fetch sizes, timeouts, linger) is passed as keyword overrides.

How clients reach the brokers (TLS, SASL credentials: :class:`~streams.kafka.security.KafkaSecurity`
in the connection) is :func:`_security`'s answer alone, for aiokafka's clients and Faust's
(:func:`_faust_security`); an override of it is refused too. A client that cannot connect for a
reason of security (a certificate not trusted, credentials refused) says so when started
(:class:`BrokerConnectionFailed`), where aiokafka alone reports only that it could not bootstrap.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Final, Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import AIOKafkaClient
from aiokafka.conn import collect_hosts, create_conn
from aiokafka.errors import KafkaConnectionError, KafkaError
from aiokafka.protocol.metadata import MetadataRequest

from streams.errors import TrustServiceError
from streams.kafka.security import KafkaSecurity
from streams.settings import Settings

Compression = Literal["none", "gzip", "snappy", "lz4", "zstd"]

#: Client id prefix of a connection built without settings (the demo, an SDK user).
DEFAULT_CLIENT_PREFIX: Final = "trust-streams"
#: Admin requests (describe, create topics) answer within this or are reported as a timeout.
ADMIN_REQUEST_TIMEOUT_MS: Final = 15_000

#: Producer options every producer has; an override of one is refused.
PRODUCER_GUARANTEES: Final[dict[str, Any]] = {"acks": "all", "enable_idempotence": True}
#: Consumer options every consumer has; an override of one is refused.
CONSUMER_GUARANTEES: Final[dict[str, Any]] = {"isolation_level": "read_committed"}
#: Decided here for every client; an override of one is refused.
_CONNECTION_OPTIONS: Final = frozenset(
    {
        "bootstrap_servers",
        "loop",
        "security_protocol",
        "ssl_context",
        "sasl_mechanism",
        "sasl_plain_username",
        "sasl_plain_password",
        "sasl_kerberos_service_name",
        "sasl_kerberos_domain_name",
        "sasl_oauth_token_provider",
    }
)
#: The security of a connection given only an address: none.
PLAINTEXT: Final = KafkaSecurity()
#: How long the look at why a client could not connect may take, per broker.
PROBE_TIMEOUT_MS: Final = 10_000


class BrokerConnectionFailed(TrustServiceError, KafkaConnectionError):  # type: ignore[misc]
    """No broker could be connected to, for the reason named (a certificate that is not trusted,
    credentials refused...): fix the security settings it names."""

    def __str__(self) -> str:
        # The reason alone (aiokafka's errors put their class name first).
        return str(self.args[0]) if self.args else "no broker could be connected to"


@dataclass(frozen=True, slots=True)
class KafkaConnection:
    """Where the brokers are and what every client built for them shares.

    Built from the settings (:meth:`from_settings`) by the worker and the command line, or from
    explicit values by code that has no settings (the SDK; a bare address is plaintext).
    """

    bootstrap_servers: str
    compression: Compression = "none"
    client_prefix: str = DEFAULT_CLIENT_PREFIX
    security: KafkaSecurity = PLAINTEXT

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaConnection:
        return cls(
            settings.kafka_bootstrap_servers,
            settings.compression,
            settings.app_id,
            settings.kafka_security,
        )

    def at(self, bootstrap_servers: str) -> KafkaConnection:
        """The same connection to other brokers."""
        return dataclasses.replace(self, bootstrap_servers=bootstrap_servers)

    def client_id(self, purpose: str) -> str:
        return f"{self.client_prefix}-{purpose}"

    @property
    def compression_type(self) -> str | None:
        """The compression as aiokafka and Faust name it (``None``: uncompressed)."""
        return None if self.compression == "none" else self.compression

    @property
    def broker_list(self) -> list[str]:
        return [host.strip() for host in self.bootstrap_servers.split(",") if host.strip()]


#: What a client may be built from: a connection, or the settings. A bare address is accepted
#: too, as a plaintext connection, but is not in the type: mypy refuses it anywhere in the
#: service, so that no client of the service can be built without the security settings.
Connectable = KafkaConnection | Settings


def connection(where: Connectable | str) -> KafkaConnection:
    if isinstance(where, KafkaConnection):
        return where
    if isinstance(where, Settings):
        return KafkaConnection.from_settings(where)
    return KafkaConnection(where)


def _security(conn: KafkaConnection) -> dict[str, Any]:
    """aiokafka options that say how every client authenticates and encrypts (plaintext: none)."""
    return conn.security.aiokafka_options()


def _faust_security(conn: KafkaConnection) -> dict[str, Any]:
    """The same as :func:`_security`, as Faust's settings (``broker_credentials``)."""
    return conn.security.faust_options()


async def connection_problem(where: Connectable) -> str | None:
    """Why no broker can be connected to, when the reason is security; else ``None``.

    Connects to each broker as every client does (TLS and SASL included), which surfaces the
    error aiokafka only logs when a client cannot bootstrap.
    """
    conn = connection(where)
    problems = []
    for host, port, _ in collect_hosts(conn.bootstrap_servers):
        address = f"{host}:{port}"
        try:
            probe = await create_conn(
                host,
                port,
                client_id=conn.client_id("connection-probe"),
                request_timeout_ms=PROBE_TIMEOUT_MS,
                **_security(conn),
            )
        except (TimeoutError, OSError, KafkaError) as exc:
            problems.append(conn.security.describe_failure(address, exc))
            continue
        try:
            # A listener that wants TLS or SASL accepts the connection, then drops it at the
            # first request of a client that did not start with them.
            await probe.send(MetadataRequest([]))
        except (TimeoutError, OSError, KafkaError) as exc:
            problems.append(conn.security.describe_failure(address, exc))
            continue
        finally:
            probe.close()
        return None  # this broker answers: the failure was something else
    return "; ".join(p for p in problems if p is not None) or None


async def _diagnosed(start: Awaitable[None], conn: KafkaConnection) -> None:
    """Await a client's start; a failure to bootstrap for a reason of security, named."""
    try:
        await start
    except KafkaConnectionError as exc:
        if isinstance(exc, BrokerConnectionFailed):
            raise
        problem = await connection_problem(conn)
        if problem is None:
            raise
        raise BrokerConnectionFailed(problem) from exc


class _Producer(AIOKafkaProducer):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, conn: KafkaConnection, **options: Any) -> None:
        super().__init__(**options)
        self._trust_connection = conn

    async def start(self) -> None:
        await _diagnosed(super().start(), self._trust_connection)


class _Consumer(AIOKafkaConsumer):  # type: ignore[misc]
    def __init__(self, conn: KafkaConnection, *topics: str, **options: Any) -> None:
        super().__init__(*topics, **options)
        self._trust_connection = conn

    async def start(self) -> None:
        await _diagnosed(super().start(), self._trust_connection)


class _Admin(AIOKafkaAdminClient):  # type: ignore[misc]
    def __init__(self, conn: KafkaConnection, **options: Any) -> None:
        super().__init__(**options)
        self._trust_connection = conn

    async def start(self) -> None:
        await _diagnosed(super().start(), self._trust_connection)


class _Client(AIOKafkaClient):  # type: ignore[misc]
    def __init__(self, conn: KafkaConnection, **options: Any) -> None:
        super().__init__(**options)
        self._trust_connection = conn

    async def start(self) -> None:
        await _diagnosed(self.bootstrap(), self._trust_connection)

    async def stop(self) -> None:
        await self.close()


def _refuse(overrides: dict[str, Any], fixed: frozenset[str] | set[str], what: str) -> None:
    refused = sorted(fixed & overrides.keys())
    if refused:
        raise ValueError(
            f"{what} option(s) {', '.join(refused)} cannot be set: every {what} of the service "
            "has the same (see streams.kafka.clients)"
        )


def _base(conn: KafkaConnection, purpose: str, client_id: str | None) -> dict[str, Any]:
    return {
        "bootstrap_servers": conn.bootstrap_servers,
        "client_id": client_id or conn.client_id(purpose),
        **_security(conn),
    }


def producer_options(
    where: Connectable, *, purpose: str, client_id: str | None = None, **overrides: Any
) -> dict[str, Any]:
    """The options :func:`producer` builds with (apart, so that they can be checked unbuilt)."""
    _refuse(overrides, _CONNECTION_OPTIONS | PRODUCER_GUARANTEES.keys(), "producer")
    conn = connection(where)
    return {
        "compression_type": conn.compression_type,
        **overrides,
        **_base(conn, purpose, client_id),
        **PRODUCER_GUARANTEES,
    }


def producer(
    where: Connectable, *, purpose: str, client_id: str | None = None, **overrides: Any
) -> AIOKafkaProducer:
    """An unstarted producer (build it in the event loop it will run in: aiokafka binds it).

    ``client_id`` replaces ``<prefix>-<purpose>`` (the SDK's users choose theirs); a
    ``compression_type`` override replaces the connection's compression.
    """
    return _Producer(
        connection(where),
        **producer_options(where, purpose=purpose, client_id=client_id, **overrides),
    )


def consumer_options(where: Connectable, *, purpose: str, **overrides: Any) -> dict[str, Any]:
    """The options :func:`consumer` builds with."""
    _refuse(overrides, _CONNECTION_OPTIONS | CONSUMER_GUARANTEES.keys() | {"client_id"}, "consumer")
    conn = connection(where)
    return {
        # Readers of the service place themselves: no group, nothing committed.
        "group_id": None,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        **overrides,
        **_base(conn, purpose, None),
        **CONSUMER_GUARANTEES,
    }


def consumer(where: Connectable, *topics: str, purpose: str, **overrides: Any) -> AIOKafkaConsumer:
    """An unstarted consumer, subscribed to ``topics`` when given (else assign partitions)."""
    options = consumer_options(where, purpose=purpose, **overrides)
    return _Consumer(connection(where), *topics, **options)


def client(where: Connectable, *, purpose: str, **overrides: Any) -> AIOKafkaClient:
    """An unstarted low-level client (``start``/``stop``), for reads that a consumer makes too
    costly (see :mod:`streams.kafka.logreader`). It sends what it is given: the read_committed
    guarantee is its user's to keep."""
    _refuse(overrides, _CONNECTION_OPTIONS | {"client_id"}, "client")
    conn = connection(where)
    return _Client(conn, **overrides, **_base(conn, purpose, None))


def admin_options(
    where: Connectable, *, purpose: str = "admin", **overrides: Any
) -> dict[str, Any]:
    """The options :func:`admin` builds with."""
    _refuse(overrides, _CONNECTION_OPTIONS | {"client_id"}, "admin client")
    conn = connection(where)
    return {
        "request_timeout_ms": ADMIN_REQUEST_TIMEOUT_MS,
        **overrides,
        **_base(conn, purpose, None),
    }


def admin(where: Connectable, *, purpose: str = "admin", **overrides: Any) -> AIOKafkaAdminClient:
    """An unstarted admin client."""
    return _Admin(connection(where), **admin_options(where, purpose=purpose, **overrides))


def faust_broker_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of ``faust.App`` for its broker, producer and consumer.

    Faust builds its clients itself, from these. Two guarantees cannot be given through its
    settings: its producer is idempotent, and its consumer reads committed records only, just
    inside a Faust transaction (this service uses none); its producer still waits for every
    in-sync replica (``producer_acks=-1``).
    """
    conn = KafkaConnection.from_settings(settings)
    return {
        "broker": [f"kafka://{host}" for host in conn.broker_list],
        "broker_client_id": conn.client_id("faust"),
        "consumer_auto_offset_reset": "earliest",
        "producer_acks": -1,
        # No linger: a revocation is sent alone and must not wait for company. Outputs are still
        # batched: a batch's outputs are all queued before the producer's sender next runs, and
        # records queued while a request is in flight go together in the next.
        "producer_linger_ms": 0,
        "producer_max_batch_size": 256 * 1024,
        "producer_compression_type": conn.compression_type,
        # Small prefetch per partition: the ticks topic must not wait behind megabytes of
        # prefetched signals, or windows close late under backlog.
        "consumer_max_fetch_size": settings.fetch_bytes_per_partition,
        "broker_max_poll_records": settings.batch_max,
        # Commit often: the replay after a crash is bounded by the commit interval.
        "broker_commit_interval": 1.0,
        "broker_session_timeout": settings.session_timeout_seconds,
        "broker_heartbeat_interval": min(3.0, settings.session_timeout_seconds / 3),
        **_faust_security(conn),
    }
