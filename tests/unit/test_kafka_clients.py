"""Every Kafka client is built by streams.kafka.clients, and carries what it promises."""

from __future__ import annotations

import ast
import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from pydantic import SecretStr

from streams.kafka import clients
from streams.kafka.clients import BrokerConnectionFailed, KafkaConnection, faust_broker_options
from streams.kafka.security import KafkaSecurity, environment_name
from streams.sdk import SignalPublisher, SyncSignalPublisher
from streams.settings import Settings
from tests.support.tls_files import Issued, issue, make_ca

STREAMS = Path(__file__).resolve().parents[2] / "streams"
CLIENTS_MODULE = STREAMS / "kafka" / "clients.py"
SECURITY_MODULE = STREAMS / "kafka" / "security.py"
CLIENT_CLASSES = {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient", "AIOKafkaClient"}
#: What builds a connection to a broker, or hands a client its security: only the clients module
#: (and the security options it delegates to) may name them.
CONNECTING = CLIENT_CLASSES | {
    "create_conn",
    "create_ssl_context",
    "SASLCredentials",
    "SSLCredentials",
}
#: aiokafka's own names for security options: no call elsewhere passes them.
SECURITY_KEYWORDS = {"ssl_context", "sasl_plain_username", "sasl_plain_password"}
PASSWORD = "pw-Scram-512"


def _name(node: ast.expr) -> str | None:
    return node.id if isinstance(node, ast.Name) else getattr(node, "attr", None)


def _references(path: Path) -> list[str]:
    """``file:line name`` of every call of a connecting name, class built on one, and call that
    passes a security keyword, in ``path`` (type annotations and imports are not uses)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str | None] = []
        if isinstance(node, ast.Call):
            names.append(_name(node.func))
            names += [k.arg for k in node.keywords if k.arg in SECURITY_KEYWORDS]
        elif isinstance(node, ast.ClassDef):
            names += [_name(base) for base in node.bases]
        for name in names:
            if name in CONNECTING or name in SECURITY_KEYWORDS:
                found.append(f"{path.relative_to(STREAMS.parent)}:{node.lineno} {name}")
    return found


def test_no_module_but_the_clients_module_builds_a_kafka_client_or_its_security() -> None:
    modules = sorted(STREAMS.rglob("*.py"))
    assert CLIENTS_MODULE in modules
    own = {CLIENTS_MODULE, SECURITY_MODULE}
    elsewhere = [r for path in modules if path not in own for r in _references(path)]
    assert elsewhere == []
    # The scan sees a use where there is one: the clients module builds each client class (as a
    # subclass that names a failure to connect) and the probe's connection; the security module
    # the TLS context and Faust's credentials.
    assert {r.split()[-1] for r in _references(CLIENTS_MODULE)} == CLIENT_CLASSES | {"create_conn"}
    assert {r.split()[-1] for r in _references(SECURITY_MODULE)} == {
        "create_ssl_context",
        "SSLCredentials",
        "SASLCredentials",
        "ssl_context",
    }


SETTINGS = Settings(
    kafka_bootstrap_servers="kafka-1:9092, kafka-2:9092", compression="zstd", app_id="scorer-eu"
)


@pytest.mark.parametrize(
    "where",
    [SETTINGS, KafkaConnection.from_settings(SETTINGS)],
    ids=["settings", "connection"],
)
@pytest.mark.parametrize(
    "overrides", [{}, {"linger_ms": 20, "request_timeout_ms": 2000}], ids=["plain", "tuned"]
)
async def test_every_producer_is_idempotent_compressed_and_named_for_its_purpose(
    where: Any, overrides: dict[str, Any]
) -> None:
    producer = clients.producer(where, purpose="config-publisher", **overrides)
    assert producer.client._client_id == "scorer-eu-config-publisher"
    assert producer.client._bootstrap_servers == "kafka-1:9092, kafka-2:9092"
    assert producer._compression_type == "zstd"
    assert producer._txn_manager is not None  # aiokafka's idempotence
    assert producer._sender._acks == -1
    if overrides:
        assert producer._request_timeout_ms == 2000
    await producer.stop()  # never started: only marks it closed


async def test_a_producer_without_settings_is_uncompressed_unless_asked() -> None:
    plain = clients.producer("127.0.0.1:1", purpose="demo-fleet")
    assert plain.client._client_id == "trust-streams-demo-fleet"
    assert plain._compression_type is None
    chosen = clients.producer(
        KafkaConnection("127.0.0.1:1", "gzip"), purpose="x", client_id="my-service"
    )
    assert chosen.client._client_id == "my-service"
    assert chosen._compression_type == "gzip"
    assert chosen._txn_manager is not None
    await plain.stop()
    await chosen.stop()


@pytest.mark.parametrize("purpose", ["signal-feed", "changelog-restore", "cli-watch"])
async def test_every_consumer_reads_committed_records_with_no_group(purpose: str) -> None:
    consumer = clients.consumer(
        SETTINGS, "some.topic", purpose=purpose, max_partition_fetch_bytes=1 << 20
    )
    assert consumer._client._client_id == f"scorer-eu-{purpose}"
    assert consumer._isolation_level == "read_committed"
    assert consumer._group_id is None
    assert consumer._enable_auto_commit is False
    assert consumer._max_partition_fetch_bytes == 1 << 20
    assert consumer.subscription() == {"some.topic"}
    await consumer.stop()


async def test_an_admin_client_is_named_and_bounded_in_time() -> None:
    admin = clients.admin(SETTINGS, purpose="topic-admin")
    assert admin._client._client_id == "scorer-eu-topic-admin"
    assert admin._client._request_timeout_ms == clients.ADMIN_REQUEST_TIMEOUT_MS
    await admin.close()


@pytest.mark.parametrize(
    ("build", "option"),
    [
        (clients.producer_options, "acks"),
        (clients.producer_options, "enable_idempotence"),
        (clients.producer_options, "bootstrap_servers"),
        (clients.consumer_options, "isolation_level"),
        (clients.consumer_options, "client_id"),
        (clients.admin_options, "bootstrap_servers"),
    ],
)
def test_the_guarantees_cannot_be_overridden(build: Any, option: str) -> None:
    with pytest.raises(ValueError, match=option):
        build(SETTINGS, purpose="x", **{option: None})


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_faust_gets_the_same_brokers_compression_and_a_client_id(compression: str) -> None:
    settings = SETTINGS.model_copy(update={"compression": compression})
    options = faust_broker_options(settings)
    assert options["broker"] == ["kafka://kafka-1:9092", "kafka://kafka-2:9092"]
    assert options["broker_client_id"] == "scorer-eu-faust"
    assert options["producer_compression_type"] == (None if compression == "none" else compression)
    assert options["producer_acks"] == -1
    assert options["consumer_max_fetch_size"] == settings.fetch_bytes_per_partition


# -- security: every client kind gets it, plaintext gets none -----------------------------------


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Issued:
    return make_ca(tmp_path_factory.mktemp("ca"))


def secure_settings(ca: Issued, **changes: Any) -> Settings:
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": "kafka-1:9093",
        "app_id": "scorer-eu",
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_mechanism": "SCRAM-SHA-512",
        "kafka_sasl_username": "worker",
        "kafka_sasl_password": PASSWORD,
        "kafka_ssl_cafile": ca.cert,
    }
    values.update(changes)
    return Settings(**{k: v for k, v in values.items() if v is not None})


def _producer(where: Any) -> Any:
    return clients.producer(where, purpose="config-publisher")


def _consumer(where: Any) -> Any:
    return clients.consumer(where, "some.topic", purpose="signal-feed")


def _admin(where: Any) -> Any:
    return clients.admin(where, purpose="topic-admin")


KINDS: dict[str, Callable[[Any], Any]] = {
    "producer": _producer,
    "consumer": _consumer,
    "admin": _admin,
}


def _client_of(built: Any) -> Any:
    """aiokafka's connection-owning client inside a producer, consumer or admin client."""
    return built.client if hasattr(built, "_sender") else built._client


async def _close(built: Any) -> None:
    """Stop a producer or consumer, close an admin client (started or not)."""
    await (built.stop() if hasattr(built, "stop") else built.close())


@pytest.mark.parametrize("kind", KINDS)
async def test_every_client_kind_connects_with_tls_and_scram_when_configured(
    kind: str, ca: Issued
) -> None:
    settings = secure_settings(ca)
    for where in (settings, KafkaConnection.from_settings(settings)):
        built = KINDS[kind](where)
        client = _client_of(built)
        await _close(built)
        assert client._security_protocol == "SASL_SSL"
        assert isinstance(client._ssl_context, ssl.SSLContext)
        assert client._ssl_context.verify_mode == ssl.CERT_REQUIRED
        assert client._ssl_context.check_hostname is True
        assert client._sasl_mechanism == "SCRAM-SHA-512"
        assert client._sasl_plain_username == "worker"
        assert client._sasl_plain_password == PASSWORD


@pytest.mark.parametrize("kind", KINDS)
async def test_a_plaintext_client_gets_no_security_options(kind: str) -> None:
    built = KINDS[kind](SETTINGS)
    client = _client_of(built)
    await _close(built)
    assert client._security_protocol == "PLAINTEXT"
    assert client._ssl_context is None
    assert client._sasl_plain_username is None
    assert client._sasl_plain_password is None
    for options in (
        clients.producer_options(SETTINGS, purpose="x"),
        clients.consumer_options(SETTINGS, purpose="x"),
        clients.admin_options(SETTINGS, purpose="x"),
    ):
        assert not options.keys() & {"security_protocol", "ssl_context", "sasl_mechanism"}


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {
                "kafka_security_protocol": "SSL",
                "kafka_sasl_mechanism": None,
                "kafka_sasl_username": None,
                "kafka_sasl_password": None,
            },
            {"security_protocol": "SSL", "ssl": True, "sasl": False},
        ),
        (
            {"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_ssl_cafile": None},
            {"security_protocol": "SASL_PLAINTEXT", "ssl": False, "sasl": True},
        ),
        ({}, {"security_protocol": "SASL_SSL", "ssl": True, "sasl": True}),
    ],
    ids=["ssl", "sasl-plaintext", "sasl-ssl"],
)
def test_each_protocol_gets_what_it_uses_and_faust_gets_the_same(
    ca: Issued, changes: dict[str, Any], expected: dict[str, Any]
) -> None:
    settings = secure_settings(ca, **changes)
    options = clients.producer_options(settings, purpose="x")
    assert options["security_protocol"] == expected["security_protocol"]
    assert ("ssl_context" in options) == expected["ssl"]
    assert ("sasl_plain_password" in options) == expected["sasl"]
    # Faust turns its broker_credentials into the same aiokafka options for its own clients.
    credentials = faust_broker_options(settings)["broker_credentials"]
    faust_auth = dict(credentials_to_aiokafka_auth(credentials))
    ours = {k: v for k, v in options.items() if k in faust_auth}
    assert faust_auth.pop("security_protocol") == ours.pop("security_protocol")
    assert isinstance(faust_auth.pop("ssl_context", None), ssl.SSLContext) == expected["ssl"]
    ours.pop("ssl_context", None)
    assert {k: v for k, v in faust_auth.items() if v is not None} == ours


def test_faust_gets_no_credentials_for_plaintext() -> None:
    assert "broker_credentials" not in faust_broker_options(SETTINGS)


def test_hostname_verification_can_be_relaxed_but_the_chain_is_still_verified(ca: Issued) -> None:
    options = clients.consumer_options(
        secure_settings(ca, kafka_ssl_check_hostname=False), purpose="x"
    )
    assert options["ssl_context"].check_hostname is False
    assert options["ssl_context"].verify_mode == ssl.CERT_REQUIRED


@pytest.mark.parametrize(
    "option", ["security_protocol", "ssl_context", "sasl_mechanism", "sasl_plain_password"]
)
@pytest.mark.parametrize(
    "build", [clients.producer_options, clients.consumer_options, clients.admin_options]
)
def test_security_cannot_be_overridden_per_client(build: Any, option: str) -> None:
    with pytest.raises(ValueError, match=option):
        build(SETTINGS, purpose="x", **{option: None})


# -- a client that cannot connect for a reason of security says why ----------------------------


@asynccontextmanager
async def tls_listener(server: Issued) -> AsyncIterator[str]:
    """A local TLS listener presenting ``server``'s certificate (it speaks no Kafka)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(server.cert, server.key)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    listener = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)
    port = listener.sockets[0].getsockname()[1]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        listener.close()
        await listener.wait_closed()


@pytest.fixture(scope="module")
def broker_tls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Issued]:
    """The broker's CA and two certificates it signed: for 127.0.0.1, and for another name."""
    directory = tmp_path_factory.mktemp("broker-tls")
    broker_ca = make_ca(directory, "broker-ca")
    return {
        "ca": broker_ca,
        "local": issue(broker_ca, directory, "local", ("127.0.0.1", "localhost")),
        "elsewhere": issue(broker_ca, directory, "elsewhere", ("kafka.elsewhere.example",)),
    }


@pytest.mark.parametrize("kind", KINDS)
async def test_a_broker_certificate_from_another_ca_is_refused_naming_tls(
    kind: str, ca: Issued, broker_tls: dict[str, Issued]
) -> None:
    async with tls_listener(broker_tls["local"]) as address:
        built = KINDS[kind](secure_settings(ca, kafka_bootstrap_servers=address))
        try:
            with pytest.raises(BrokerConnectionFailed) as caught:
                await asyncio.wait_for(built.start(), timeout=30)
        finally:
            await _close(built)
    message = str(caught.value)
    assert f"TLS: the broker at {address} presented a certificate that is not trusted" in message
    assert "certificate verify failed" in message or "unable to get local issuer" in message
    assert f"TRUST_KAFKA_SSL_CAFILE ({ca.cert}) must hold the CA that signed it" in message
    assert isinstance(caught.value, KafkaConnectionError)  # callers that retry keep retrying


async def test_a_certificate_for_another_host_is_refused_unless_hostnames_are_not_checked(
    broker_tls: dict[str, Issued],
) -> None:
    async with tls_listener(broker_tls["elsewhere"]) as address:
        settings = secure_settings(broker_tls["ca"], kafka_bootstrap_servers=address)
        consumer = _consumer(settings)
        try:
            with pytest.raises(BrokerConnectionFailed, match="does not name that host"):
                await asyncio.wait_for(consumer.start(), timeout=30)
        finally:
            await consumer.stop()
        relaxed = _consumer(settings.model_copy(update={"kafka_ssl_check_hostname": False}))
        try:
            # TLS is accepted now; what fails is that this listener speaks no Kafka, which is not
            # a matter of security, so aiokafka's own error stands.
            with pytest.raises(KafkaConnectionError) as caught:
                await asyncio.wait_for(relaxed.start(), timeout=30)
        finally:
            await relaxed.stop()
    assert not isinstance(caught.value, BrokerConnectionFailed)


async def test_the_sdk_names_its_parameter_when_the_certificate_is_not_trusted(
    ca: Issued, broker_tls: dict[str, Issued]
) -> None:
    async with tls_listener(broker_tls["local"]) as address:
        publisher = SignalPublisher(
            address,
            security_protocol="SSL",
            ssl_cafile=ca.cert,
            request_timeout_ms=5000,
        )
        with pytest.raises(BrokerConnectionFailed, match=r"not trusted .*; ssl_cafile \("):
            await asyncio.wait_for(publisher.start(), timeout=30)


async def test_the_sync_sdk_from_settings_connects_with_the_settings_security(
    ca: Issued, broker_tls: dict[str, Issued]
) -> None:
    async with tls_listener(broker_tls["local"]) as address:
        settings = secure_settings(
            ca,
            kafka_bootstrap_servers=address,
            kafka_security_protocol="SSL",
            kafka_sasl_mechanism=None,
            kafka_sasl_username=None,
            kafka_sasl_password=None,
        )
        # The synchronous publisher connects in its constructor, on its own thread and loop.
        with pytest.raises(BrokerConnectionFailed, match="not trusted"):
            await asyncio.to_thread(SyncSignalPublisher.from_settings, settings)


@pytest.mark.parametrize(
    ("protocol", "wanted"),
    [
        ("PLAINTEXT", "TLS or SASL credentials"),
        ("SSL", "SASL credentials"),
        ("SASL_PLAINTEXT", "TLS"),
        ("SASL_SSL", None),
    ],
)
def test_a_dropped_connection_names_what_the_listener_may_want(
    protocol: str, wanted: str | None
) -> None:
    security = KafkaSecurity(protocol, naming=environment_name)  # type: ignore[arg-type]
    problem = security.describe_failure("kafka:9093", KafkaConnectionError("closed"))
    if wanted is None:
        assert problem is None  # nothing to suggest: aiokafka's own error stands
    else:
        assert problem == (
            "the broker at kafka:9093 accepted the connection, then dropped it: its listener may "
            f"require {wanted}, and TRUST_KAFKA_SECURITY_PROTOCOL is {protocol}"
        )


def test_refused_credentials_and_mechanisms_are_named_and_unreachability_is_not() -> None:
    security = KafkaSecurity(
        "SASL_PLAINTEXT", "SCRAM-SHA-256", "operator", SecretStr(PASSWORD), naming=environment_name
    )
    refused = security.describe_failure("kafka:9093", SaslAuthenticationFailed("bad"))
    assert refused == (
        "the broker at kafka:9093 refused the credentials of 'operator' (SCRAM-SHA-256): check "
        "TRUST_KAFKA_SASL_USERNAME and TRUST_KAFKA_SASL_PASSWORD"
    )
    offered = security.describe_failure("kafka:9093", UnsupportedSaslMechanismError("no"))
    assert (
        offered
        == "the broker at kafka:9093 does not offer TRUST_KAFKA_SASL_MECHANISM=SCRAM-SHA-256"
    )
    # No answer at all is not a matter of security: the usual "no broker" message stays.
    assert security.describe_failure("kafka:9093", ConnectionRefusedError(111, "refused")) is None
    assert security.describe_failure("kafka:9093", TimeoutError()) is None
