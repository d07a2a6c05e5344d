"""Every Kafka client is built by streams.kafka.clients, and carries what it promises."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from streams.kafka import clients
from streams.kafka.clients import KafkaConnection, faust_broker_options
from streams.settings import Settings

STREAMS = Path(__file__).resolve().parents[2] / "streams"
CLIENTS_MODULE = STREAMS / "kafka" / "clients.py"
CLIENT_CLASSES = {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient"}


def _constructions(path: Path) -> list[str]:
    """``file:line name`` of every call of an aiokafka client class in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
        if name in CLIENT_CLASSES:
            found.append(f"{path.relative_to(STREAMS.parent)}:{node.lineno} {name}")
    return found


def test_no_module_but_the_clients_module_constructs_a_kafka_client() -> None:
    modules = sorted(STREAMS.rglob("*.py"))
    assert CLIENTS_MODULE in modules
    elsewhere = [c for path in modules if path != CLIENTS_MODULE for c in _constructions(path)]
    assert elsewhere == []
    # The scan sees a construction where there is one.
    assert {c.split()[-1] for c in _constructions(CLIENTS_MODULE)} == CLIENT_CLASSES


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
