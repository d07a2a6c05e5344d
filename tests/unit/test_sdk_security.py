"""The SDK's security parameters: the worker's settings, checked the same way, named as
parameters, and carried by ``from_settings``."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from pydantic import SecretStr

from streams.errors import InvalidSettings
from streams.kafka import clients
from streams.kafka.security import KafkaSecurity
from streams.sdk import SignalPublisher, SyncSignalPublisher
from streams.settings import Settings
from tests.support.tls_files import Issued, make_ca

PASSWORD = "pw-For-The-Sdk"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Issued:
    return make_ca(tmp_path_factory.mktemp("sdk-ca"))


def test_from_settings_carries_every_security_setting(ca: Issued) -> None:
    settings = Settings(
        kafka_bootstrap_servers="kafka-1:9093",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username="producer-output_quality",
        kafka_sasl_password=PASSWORD,
        kafka_ssl_cafile=ca.cert,
        kafka_ssl_check_hostname=False,
    )
    publisher = SignalPublisher.from_settings(settings, client_id="quality-service")
    assert publisher.security == settings.kafka_security
    options = clients.producer_options(
        publisher._connection, purpose="signal-publisher", client_id="quality-service"
    )
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-256"
    assert options["sasl_plain_username"] == "producer-output_quality"
    assert options["sasl_plain_password"] == PASSWORD
    assert options["ssl_context"].check_hostname is False


def test_the_parameters_build_the_same_security_as_the_settings(ca: Issued) -> None:
    publisher = SignalPublisher(
        "kafka-1:9093",
        security_protocol="SSL",
        ssl_cafile=str(ca.cert),
        ssl_certfile=ca.cert,
        ssl_keyfile=ca.key,
    )
    assert publisher.security == KafkaSecurity(
        security_protocol="SSL", ssl_cafile=ca.cert, ssl_certfile=ca.cert, ssl_keyfile=ca.key
    )
    assert publisher.security.ssl_check_hostname is True


def test_plaintext_by_default() -> None:
    publisher = SignalPublisher("127.0.0.1:1")
    assert publisher.security == KafkaSecurity()
    assert "security_protocol" not in clients.producer_options(
        publisher._connection, purpose="signal-publisher"
    )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            {"security_protocol": "SASL_SSL"},
            "security_protocol=SASL_SSL needs sasl_mechanism, sasl_username, sasl_password",
        ),
        (
            {"sasl_username": "u", "sasl_password": "p", "sasl_mechanism": "PLAIN"},
            "sasl_mechanism, sasl_username, sasl_password given, but security_protocol is "
            "PLAINTEXT",
        ),
        ({"security_protocol": "TLS"}, "security_protocol must be one of PLAINTEXT, SSL"),
        ({"security_protocol": "SSL", "ssl_cafile": "/nowhere/ca.pem"}, "ssl_cafile: /nowhere"),
        (
            {"security_protocol": "SSL", "ssl_certfile": "/nowhere/c.pem"},
            "ssl_certfile and ssl_keyfile go together",
        ),
    ],
)
def test_what_would_connect_with_less_is_refused_naming_the_parameters(
    arguments: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidSettings, match=message.replace("(", r"\(")):
        SignalPublisher("kafka-1:9093", **arguments)


def test_the_sync_publisher_refuses_before_starting_anything() -> None:
    threads = threading.active_count()
    with pytest.raises(InvalidSettings, match="needs sasl_mechanism"):
        SyncSignalPublisher("kafka-1:9093", security_protocol="SASL_PLAINTEXT")
    assert threading.active_count() == threads


@pytest.mark.parametrize("option", ["ssl_context", "sasl_plain_username", "sasl_plain_password"])
def test_aiokafkas_security_options_are_refused_in_favour_of_the_parameters(option: str) -> None:
    with pytest.raises(ValueError, match=f"{option} cannot be set: give security_protocol"):
        SignalPublisher("kafka-1:9093", **{option: None})


def test_the_password_is_kept_secret(ca: Issued) -> None:
    publisher = SignalPublisher(
        "kafka-1:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="operator",
        sasl_password=PASSWORD,
        ssl_cafile=ca.cert,
    )
    assert isinstance(publisher.security.sasl_password, SecretStr)
    assert PASSWORD not in repr(publisher.security)
    assert PASSWORD not in repr(publisher._connection)
    same = SignalPublisher(
        "kafka-1:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="operator",
        sasl_password=SecretStr(PASSWORD),
        ssl_cafile=ca.cert,
    )
    assert same.security == publisher.security
