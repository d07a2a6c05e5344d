"""The Kafka security settings: each way they are refused, the password never shown, and no
``TRUST_`` variable that nothing reads (a typo would silently drop a security setting)."""

from __future__ import annotations

import logging
import re
import ssl
from pathlib import Path
from typing import Any

import pytest

from streams.__main__ import main
from streams.console import UserError, load_settings
from streams.errors import InvalidSettings, TrustServiceError
from streams.kafka import security as security_module
from streams.kafka.clients import KafkaConnection
from streams.settings import ENVIRONMENT_OUTSIDE_SETTINGS, Settings, known_variables
from tests.support.tls_files import Issued, issue, make_ca

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "s3cret-Pa55word"
#: A misspelt variable (this file names unknown variables on purpose: the scan below skips it).
TYPO = "TRUST_KAFKA_SECURITY_PROTOCL"


@pytest.fixture(autouse=True)
def _no_trust_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sets the variables it is about, and no others."""
    import os

    for name in list(os.environ):
        if name.upper().startswith("TRUST_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Issued, Issued]:
    """A CA, and a client certificate with its key signed by it."""
    directory = tmp_path_factory.mktemp("tls")
    ca = make_ca(directory)
    return ca, issue(ca, directory, "client")


def sasl_ssl(**changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_mechanism": "SCRAM-SHA-512",
        "kafka_sasl_username": "worker",
        "kafka_sasl_password": PASSWORD,
    }
    values.update(changes)
    return {k: v for k, v in values.items() if v is not None}


def problems(**values: Any) -> str:
    with pytest.raises(InvalidSettings) as caught:
        Settings(**values)
    return str(caught.value)


# -- defaults and accepted combinations ---------------------------------------------------------


def test_the_default_is_plaintext_with_nothing_else() -> None:
    settings = Settings()
    assert settings.kafka_security_protocol == "PLAINTEXT"
    assert settings.kafka_ssl_check_hostname is True
    assert settings.kafka_security.aiokafka_options() == {}
    assert settings.kafka_security.faust_options() == {}


def test_sasl_ssl_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tls: tuple[Issued, Issued]
) -> None:
    ca, _ = tls
    monkeypatch.setenv("TRUST_KAFKA_SECURITY_PROTOCOL", "sasl_ssl")  # any case
    monkeypatch.setenv("TRUST_KAFKA_SASL_MECHANISM", "scram-sha-256")
    monkeypatch.setenv("TRUST_KAFKA_SASL_USERNAME", "worker")
    monkeypatch.setenv("TRUST_KAFKA_SASL_PASSWORD", PASSWORD)
    monkeypatch.setenv("TRUST_KAFKA_SSL_CAFILE", str(ca.cert))
    monkeypatch.setenv("TRUST_KAFKA_SSL_CHECK_HOSTNAME", "false")
    settings = Settings()
    assert settings.kafka_security_protocol == "SASL_SSL"
    assert settings.kafka_sasl_mechanism == "SCRAM-SHA-256"
    assert settings.kafka_ssl_cafile == ca.cert
    assert settings.kafka_ssl_check_hostname is False
    assert settings.kafka_sasl_password is not None
    assert settings.kafka_sasl_password.get_secret_value() == PASSWORD


def test_empty_variables_are_not_given(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SASL_MECHANISM", "SASL_USERNAME", "SASL_PASSWORD", "SSL_CAFILE", "SSL_KEYFILE"):
        monkeypatch.setenv(f"TRUST_KAFKA_{name}", "")
    settings = Settings()
    assert settings.kafka_sasl_username is None
    assert settings.kafka_ssl_cafile is None
    assert settings.kafka_security.aiokafka_options() == {}


def test_ssl_with_a_client_certificate_is_accepted(tls: tuple[Issued, Issued]) -> None:
    ca, client = tls
    settings = Settings(
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=ca.cert,
        kafka_ssl_certfile=client.cert,
        kafka_ssl_keyfile=client.key,
    )
    context = settings.kafka_security.ssl_context()
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True


# -- each refusal ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("missing", "named"),
    [
        ("kafka_sasl_mechanism", "TRUST_KAFKA_SASL_MECHANISM"),
        ("kafka_sasl_username", "TRUST_KAFKA_SASL_USERNAME"),
        ("kafka_sasl_password", "TRUST_KAFKA_SASL_PASSWORD"),
    ],
)
@pytest.mark.parametrize("protocol", ["SASL_SSL", "SASL_PLAINTEXT"])
def test_a_sasl_protocol_needs_mechanism_username_and_password(
    protocol: str, missing: str, named: str
) -> None:
    message = problems(**sasl_ssl(kafka_security_protocol=protocol, **{missing: None}))
    assert f"TRUST_KAFKA_SECURITY_PROTOCOL={protocol} needs {named}" in message


def test_all_that_is_missing_is_named_at_once() -> None:
    message = problems(kafka_security_protocol="SASL_SSL")
    assert (
        "needs TRUST_KAFKA_SASL_MECHANISM, TRUST_KAFKA_SASL_USERNAME, TRUST_KAFKA_SASL_PASSWORD"
        in message
    )


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SSL"])
def test_credentials_without_a_sasl_protocol_are_refused_not_ignored(protocol: str) -> None:
    message = problems(**sasl_ssl(kafka_security_protocol=protocol))
    assert "TRUST_KAFKA_SASL_MECHANISM, TRUST_KAFKA_SASL_USERNAME, TRUST_KAFKA_SASL_PASSWORD" in (
        message
    )
    assert f"TRUST_KAFKA_SECURITY_PROTOCOL is {protocol}, which sends no credentials" in message


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SASL_PLAINTEXT"])
def test_tls_files_without_a_tls_protocol_are_refused_not_ignored(
    protocol: str, tls: tuple[Issued, Issued]
) -> None:
    ca, _ = tls
    values = sasl_ssl() if protocol.startswith("SASL") else {}
    values |= {"kafka_security_protocol": protocol, "kafka_ssl_cafile": ca.cert}
    message = problems(**values)
    assert f"TRUST_KAFKA_SSL_CAFILE given, but TRUST_KAFKA_SECURITY_PROTOCOL is {protocol}" in (
        message
    )
    assert "does not use TLS" in message


@pytest.mark.parametrize("given", ["kafka_ssl_certfile", "kafka_ssl_keyfile"])
def test_a_client_certificate_and_its_key_go_together(
    given: str, tls: tuple[Issued, Issued]
) -> None:
    _, client = tls
    path = client.cert if given.endswith("certfile") else client.key
    message = problems(kafka_security_protocol="SSL", **{given: path})
    assert "TRUST_KAFKA_SSL_CERTFILE and TRUST_KAFKA_SSL_KEYFILE go together" in message


def test_a_tls_file_that_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "ca.pem"
    message = problems(**sasl_ssl(kafka_ssl_cafile=missing))
    assert f"TRUST_KAFKA_SSL_CAFILE: {missing} does not exist" in message


def test_a_tls_file_that_is_a_directory(tmp_path: Path) -> None:
    message = problems(**sasl_ssl(kafka_ssl_cafile=tmp_path))
    assert f"TRUST_KAFKA_SSL_CAFILE: {tmp_path} is not a file" in message


def test_a_tls_file_that_cannot_be_read(
    monkeypatch: pytest.MonkeyPatch, tls: tuple[Issued, Issued]
) -> None:
    ca, _ = tls
    # Permissions do not stop root, who runs these tests in containers: the check is os.access.
    real_access = security_module.os.access
    monkeypatch.setattr(
        security_module.os,
        "access",
        lambda path, mode: Path(path) != ca.cert and real_access(path, mode),
    )
    message = problems(**sasl_ssl(kafka_ssl_cafile=ca.cert))
    assert f"TRUST_KAFKA_SSL_CAFILE: {ca.cert} cannot be read by this user" in message


def test_a_tls_file_that_is_not_pem(tmp_path: Path) -> None:
    junk = tmp_path / "ca.pem"
    junk.write_text("not a certificate\n")
    message = problems(**sasl_ssl(kafka_ssl_cafile=junk))
    assert "the TLS files (TRUST_KAFKA_SSL_CAFILE) cannot be loaded" in message


def test_a_key_that_does_not_match_the_certificate(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "a")
    other = make_ca(tmp_path / "b")
    message = problems(
        kafka_security_protocol="SSL", kafka_ssl_certfile=ca.cert, kafka_ssl_keyfile=other.key
    )
    assert "cannot be loaded" in message


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"kafka_security_protocol": "TLS"}, "TRUST_KAFKA_SECURITY_PROTOCOL"),
        (sasl_ssl(kafka_sasl_mechanism="GSSAPI"), "TRUST_KAFKA_SASL_MECHANISM"),
        ({"kafka_ssl_check_hostname": "perhaps"}, "TRUST_KAFKA_SSL_CHECK_HOSTNAME"),
    ],
)
def test_a_value_outside_the_choices_is_named(values: dict[str, Any], named: str) -> None:
    assert f"{named}: " in problems(**values)


def test_an_unknown_keyword_is_refused() -> None:
    assert "TRUST_KAFKA_SASL_PASSWD" in problems(kafka_sasl_passwd=PASSWORD)


def test_settings_errors_are_under_the_root_and_value_errors() -> None:
    with pytest.raises(InvalidSettings) as caught:
        Settings(kafka_security_protocol="SASL_SSL")
    assert isinstance(caught.value, TrustServiceError)
    assert isinstance(caught.value, ValueError)
    assert caught.value.problems  # what a command line renames by flag
    assert str(caught.value).startswith("invalid settings: ")


# -- the password is never shown ---------------------------------------------------------------


def test_the_password_is_masked_in_reprs_and_the_logged_settings(
    caplog: pytest.LogCaptureFixture, tls: tuple[Issued, Issued]
) -> None:
    ca, _ = tls
    settings = Settings(**sasl_ssl(kafka_ssl_cafile=ca.cert), admin_token="admin-Token-9")
    connection = KafkaConnection.from_settings(settings)
    shown = settings.masked()
    assert shown["kafka_sasl_password"] == "***"
    assert shown["admin_token"] == "***"
    assert shown["kafka_ssl_cafile"] == str(ca.cert)
    assert shown["kafka_sasl_username"] == "worker"
    with caplog.at_level(logging.INFO):
        logging.getLogger("streams").info("Starting worker with settings %s", shown)
    faust_credentials = settings.kafka_security.faust_options()["broker_credentials"]
    for text in (
        repr(settings),
        str(settings),
        repr(connection),
        repr(settings.kafka_security),
        repr(faust_credentials),
        caplog.text,
    ):
        assert PASSWORD not in text
        assert "admin-Token-9" not in text
    assert "Starting worker with settings" in caplog.text


def test_unset_secrets_are_shown_as_unset() -> None:
    shown = Settings().masked()
    assert shown["kafka_sasl_password"] is None
    assert shown["admin_token"] == "(unset)"


# -- unknown TRUST_ variables ------------------------------------------------------------------


def test_an_unknown_variable_is_named_with_the_closest_known_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(TYPO, "SASL_SSL")
    with pytest.raises(InvalidSettings) as caught:
        Settings()
    hint = "did you mean TRUST_KAFKA_SECURITY_PROTOCOL?"
    assert caught.value.problems == ((TYPO, f"unknown setting ({hint}); rename or remove it"),)


def test_the_check_ignores_case_as_the_settings_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("trust_partitions", "3")
    assert Settings().partitions == 3
    monkeypatch.setenv("trust_kafka_sasl_usernme", "worker")
    assert "did you mean TRUST_KAFKA_SASL_USERNAME?" in problems()


def test_an_unknown_variable_like_nothing_known_points_to_the_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRUST_QQQQ", "1")
    assert "TRUST_QQQQ: unknown setting (see README.md for the settings)" in problems()


@pytest.mark.parametrize("name", sorted(ENVIRONMENT_OUTSIDE_SETTINGS))
def test_the_variables_read_outside_the_settings_are_allowed(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv(name, "1")
    assert Settings().partitions == 6


def test_every_trust_variable_the_project_mentions_is_known() -> None:
    """The deployment files, scripts, docs and tests set or read only variables the service
    knows: none of them makes a worker or a command refuse to start."""
    places = [
        ROOT / "README.md",
        ROOT / "docker-compose.yml",
        ROOT / "Makefile",
        *(ROOT / "docs").glob("*.md"),
        *(p for p in (ROOT / "deploy").rglob("*") if p.is_file()),
        *(p for p in (ROOT / ".ci").rglob("*") if p.is_file()),
        *(ROOT / "streams").rglob("*.py"),
        *(p for p in (ROOT / "tests").rglob("*.py") if p != Path(__file__)),
    ]
    known = known_variables()
    mentioned: dict[str, str] = {}
    for path in places:
        text = path.read_text(errors="replace")
        for name in re.findall(r"\bTRUST_[A-Z0-9_]*[A-Z0-9]\b", text):
            mentioned.setdefault(name, str(path.relative_to(ROOT)))
    assert len(mentioned) > 20  # the scan found them
    # TRUST_WEIGHT_<DIMENSION> is how the README writes the five weights.
    unknown = {n: where for n, where in mentioned.items() if n not in known | {"TRUST_WEIGHT"}}
    assert unknown == {}


# -- the command line and the worker ----------------------------------------------------------


def test_the_command_line_names_the_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    monkeypatch.setenv("TRUST_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("TRUST_KAFKA_SASL_USERNAME", "operator")
    args = argparse.Namespace(bootstrap_servers="kafka:9093", topic_prefix=None)
    with pytest.raises(UserError) as caught:
        load_settings(args)
    assert str(caught.value) == (
        "invalid settings: TRUST_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs "
        "TRUST_KAFKA_SASL_MECHANISM, TRUST_KAFKA_SASL_PASSWORD"
    )


@pytest.mark.parametrize("command", [["worker"], ["topics", "--check"], ["config", "get"]])
def test_a_typo_stops_the_worker_and_every_command_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    monkeypatch.setenv(TYPO, "SASL_SSL")
    assert main(command) == 2
    err = capsys.readouterr().err
    assert err == (
        f"trust-streams: error: invalid settings: {TYPO}: unknown setting (did you mean "
        "TRUST_KAFKA_SECURITY_PROTOCOL?); rename or remove it\n"
    )
