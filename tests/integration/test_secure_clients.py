"""The service's own clients against the secured broker (``deploy/local/kafka start --secure``:
SASL_SSL, SCRAM-SHA-512, a CA of its own, the ACL set of deploy/acls.py applied to the test's
topic prefix).

- Every client verifies the broker's certificate: with a CA that did not sign it, the command line,
  the worker and the SDK refuse to connect at once, naming the TLS failure.
- A worker given the worker principal's file scores a fleet, published by the SDK as each
  dimension's producer principal, exactly as the oracle does, and publishes its revocations.
- The command line works with each role's file, and the ACLs decide what a role may do: a producer
  may not change the configuration or lift a revocation, and is told so in one line.

Outputs are read with plain aiokafka clients logging in as the reader roles, independently of the
code under test.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streams.kafka.clients import BrokerConnectionFailed
from streams.kafka.topics import TopicNames
from streams.sdk import SignalPublisher
from streams.settings import Settings
from tests.oracle import DIMENSIONS, OracleAgent
from tests.support.cli import run_cli
from tests.support.kafka_io import unique_name
from tests.support.secure_broker import (
    SecureBroker,
    acls_module,
)
from tests.support.signals import dedupe_updates, latest_update_per_agent, lifetime_signals
from tests.support.tls_files import make_ca
from tests.support.worker import WorkerProcess, worker_env

PARTITIONS = 3
WINDOW_S, GRACE_S = 2, 1
#: Connecting with an untrusted certificate fails at the handshake: far sooner than this.
REFUSAL_BOUND_S = 30.0


@dataclass(frozen=True)
class Deployment:
    """One deployment on the secured broker: its topic prefix, app id, and a worker."""

    broker: SecureBroker
    prefix: str
    worker: WorkerProcess

    @property
    def names(self) -> TopicNames:
        return TopicNames(self.prefix)

    def env(self, principal: str, **changes: str) -> dict[str, str]:
        """The principal's file, for this deployment's topics."""
        return {
            **self.broker.principal(principal).env,
            "TRUST_TOPIC_PREFIX": self.prefix,
            "TRUST_PARTITIONS": str(PARTITIONS),
            **changes,
        }

    def settings(self, principal: str) -> Settings:
        env = self.env(principal)
        return Settings(**{k.removeprefix("TRUST_").lower(): v for k, v in env.items()})

    def options(self, principal: str) -> dict[str, Any]:
        """Plain aiokafka options logging in as ``principal`` (not the service's builder)."""
        options: dict[str, Any] = self.broker.principal(principal).client_options()
        return options


@pytest.fixture(scope="module")
def deployment(
    secure_broker: SecureBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """The ACL set applied to a prefix of this module's own, and a worker started with nothing
    but the worker principal's file (and the deployment's prefix and window)."""
    acls = acls_module()
    prefix = unique_name("sec") + "."
    app_id = f"{prefix}scorer"
    admin = secure_broker.admin.client_options()
    bindings = acls.acl_set(acls.Deployment(prefix, app_id))
    asyncio.run(acls.apply(admin, bindings))
    workdir = tmp_path_factory.mktemp("secure-worker")
    env = worker_env(
        secure_broker.address,
        prefix,
        workdir / "state",
        partitions=PARTITIONS,
        app_id=app_id,
        window_seconds=str(WINDOW_S),
        grace_seconds=str(GRACE_S),
    )
    env |= secure_broker.principal("worker").env
    worker = WorkerProcess(env=env, log_path=workdir / "worker.log").start()
    try:
        worker.wait_until_ready(timeout=150)
        yield Deployment(secure_broker, prefix, worker)
    finally:
        worker.ensure_stopped()
        asyncio.run(acls.remove(admin, bindings))
        asyncio.run(_delete_topics(admin, prefix, app_id))


async def _delete_topics(options: dict[str, Any], prefix: str, app_id: str) -> None:
    """The deployment's topics, and Faust's (which start with the app id)."""
    admin = AIOKafkaAdminClient(**options, request_timeout_ms=10_000)
    await admin.start()
    try:
        ours = [t for t in await admin.list_topics() if t.startswith((prefix, f"{app_id}-"))]
        if ours:
            await admin.delete_topics(ours)
    finally:
        await admin.close()


async def read_until(
    options: dict[str, Any],
    topic: str,
    until: Callable[[list[dict[str, Any]]], bool],
    timeout: float,
    what: str,
) -> list[dict[str, Any]]:
    """Every record of ``topic`` from its start, as JSON, until ``until`` holds."""
    consumer = AIOKafkaConsumer(
        **options, group_id=None, enable_auto_commit=False, request_timeout_ms=10_000
    )
    await consumer.start()
    bodies: list[dict[str, Any]] = []
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout
        while not until(bodies):
            if time.monotonic() > deadline:
                raise AssertionError(f"waited {timeout:.0f} s for {what}; read {len(bodies)}")
            batch = await consumer.getmany(timeout_ms=500)
            bodies += [json.loads(m.value) for ms in batch.values() for m in ms if m.value]
    finally:
        await consumer.stop()
    return bodies


# -- (a) the broker's certificate is verified -------------------------------------------------


@pytest.fixture(scope="module")
def foreign_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA that signed nothing the secured broker presents."""
    return make_ca(tmp_path_factory.mktemp("foreign-ca"), "foreign-ca").cert


def _assert_tls_refusal(text: str, address: str, cafile: Path) -> None:
    assert f"TLS: the broker at {address} presented a certificate that is not trusted" in text
    assert "certificate verify failed" in text
    assert f"TRUST_KAFKA_SSL_CAFILE ({cafile}) must hold the CA that signed it" in text


@pytest.mark.parametrize(
    "command", [["topics", "--check"], ["config", "get"], ["watch", "scores", "--timeout", "5"]]
)
def test_the_command_line_refuses_a_broker_its_ca_did_not_sign(
    deployment: Deployment, foreign_ca: Path, command: list[str]
) -> None:
    env = deployment.env("operator", TRUST_KAFKA_SSL_CAFILE=str(foreign_ca))
    started = time.monotonic()
    result = run_cli(env, *command, timeout=60)
    assert time.monotonic() - started < REFUSAL_BOUND_S
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("trust-streams: error: TLS: ")
    _assert_tls_refusal(lines[0], deployment.broker.address, foreign_ca)


def test_the_worker_refuses_a_broker_its_ca_did_not_sign(
    deployment: Deployment, foreign_ca: Path, tmp_path: Path
) -> None:
    env = worker_env(
        deployment.broker.address, deployment.prefix, tmp_path / "state", partitions=PARTITIONS
    )
    env |= deployment.env("worker", TRUST_KAFKA_SSL_CAFILE=str(foreign_ca))
    started = time.monotonic()
    result = run_cli(env, "worker", timeout=90)
    assert time.monotonic() - started < REFUSAL_BOUND_S + 15  # the worker imports more first
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("trust-streams: error: TLS: ")
    _assert_tls_refusal(last, deployment.broker.address, foreign_ca)


async def test_the_sdk_refuses_a_broker_its_ca_did_not_sign(
    deployment: Deployment, foreign_ca: Path
) -> None:
    settings = deployment.settings("producer-policy_compliance").model_copy(
        update={"kafka_ssl_cafile": foreign_ca}
    )
    publisher = SignalPublisher.from_settings(settings)
    with pytest.raises(BrokerConnectionFailed, match="presented a certificate that is not trusted"):
        await asyncio.wait_for(publisher.start(), REFUSAL_BOUND_S)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"TRUST_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT", "TRUST_KAFKA_SSL_CAFILE": ""},
            "may require TLS or SASL credentials, and TRUST_KAFKA_SECURITY_PROTOCOL is PLAINTEXT",
        ),
        (
            {"TRUST_KAFKA_SECURITY_PROTOCOL": "SSL"},
            "may require SASL credentials, and TRUST_KAFKA_SECURITY_PROTOCOL is SSL",
        ),
        (
            {"TRUST_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256"},
            "does not offer TRUST_KAFKA_SASL_MECHANISM=SCRAM-SHA-256",
        ),
    ],
    ids=["plaintext", "tls-without-sasl", "other-mechanism"],
)
def test_a_client_set_up_for_another_listener_is_told_what_it_lacks(
    deployment: Deployment, changes: dict[str, str], expected: str
) -> None:
    env = deployment.env("operator", **changes)
    if changes.get("TRUST_KAFKA_SECURITY_PROTOCOL") in ("PLAINTEXT", "SSL"):
        # Credentials with a protocol that sends none are refused before connecting.
        env |= {f"TRUST_KAFKA_SASL_{k}": "" for k in ("MECHANISM", "USERNAME", "PASSWORD")}
    result = run_cli(env, "topics", "--check", timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"the broker at {deployment.broker.address} " in result.stderr
    assert expected in result.stderr


def test_a_wrong_password_is_named_as_such(deployment: Deployment) -> None:
    env = deployment.env("operator", TRUST_KAFKA_SASL_PASSWORD="not-the-password")
    result = run_cli(env, "config", "get", timeout=60)
    assert result.returncode == 2, result.stderr
    assert "refused the credentials of 'operator' (SCRAM-SHA-512)" in result.stderr
    assert "not-the-password" not in result.stderr


# -- (b) a worker on the secured broker scores a fleet as the oracle does -------------------------


def _fleet(rng: random.Random, agents: list[str], count: int) -> list[tuple[str, str, float]]:
    """``count`` signals whose final scores do not depend on how the worker interleaves its five
    topics: every tenth agent sends zeros only, the others never a critical value."""
    signals = []
    for _ in range(count):
        i = rng.randrange(len(agents))
        if i % 10 == 0:
            dimension, value = rng.choice(("security_posture", "policy_compliance")), 0.0
        else:
            dimension, value = rng.choice(DIMENSIONS), rng.choice((1.0, 0.8, rng.uniform(0.3, 1)))
        signals.append((agents[i], dimension, value))
    return signals


@pytest.fixture(scope="module")
def published_fleet(deployment: Deployment) -> dict[str, list[tuple[str, float]]]:
    """A fleet's signals, each sent by the SDK as its dimension's producer principal."""
    return asyncio.run(_publish_fleet(deployment))


async def _publish_fleet(deployment: Deployment) -> dict[str, list[tuple[str, float]]]:
    rng = random.Random(20261129)
    agents = [f"did:mesh:secure-{i:04d}" for i in range(120)]
    sent: dict[str, list[tuple[str, float]]] = defaultdict(list)
    publishers = {
        d: SignalPublisher.from_settings(deployment.settings(f"producer-{d}"), client_id=f"p-{d}")
        for d in DIMENSIONS
    }
    for publisher in publishers.values():
        await publisher.start()
    try:
        for did, dimension, value in _fleet(rng, agents, 1500):
            await publishers[dimension].record_signal(did, dimension, value, "secure-fleet")
            sent[did].append((dimension, value))
    finally:
        for publisher in publishers.values():
            await publisher.stop()  # flushes: every signal acknowledged
    return dict(sent)


async def test_a_worker_with_the_worker_principal_scores_as_the_oracle_does(
    deployment: Deployment, published_fleet: dict[str, list[tuple[str, float]]]
) -> None:
    def complete(bodies: list[dict[str, Any]]) -> bool:
        latest = latest_update_per_agent(list(dedupe_updates(bodies).values()))
        return all(
            did in latest and lifetime_signals(latest[did]) == len(signals)
            for did, signals in published_fleet.items()
        )

    updates = await read_until(
        deployment.options("scores-reader"),
        deployment.names.scores,
        complete,
        timeout=120,
        what="score updates counting every signal",
    )
    latest = latest_update_per_agent(list(dedupe_updates(updates).values()))
    revoked = set()
    for did, signals in published_fleet.items():
        oracle = OracleAgent.replay(signals)
        assert latest[did]["total_score"] == oracle.total_score, did
        assert latest[did]["revoked"] is oracle.revoked, did
        for d in DIMENSIONS:
            assert latest[did]["dimensions"][d]["score"] == oracle.dimension_scores()[d], (did, d)
        if oracle.revoked:
            revoked.add(did)
    assert revoked, "the fleet revokes some agents"

    revocations = await read_until(
        deployment.options("security-team"),
        deployment.names.revocations,
        lambda bodies: {b["agent_did"] for b in bodies} >= revoked,
        timeout=60,
        what=f"revocations of {len(revoked)} agents",
    )
    revoked_now = {b["agent_did"] for b in revocations if b["type"] == "revoked"}
    assert revoked_now & published_fleet.keys() == revoked
    log = deployment.worker.log
    assert "Traceback" not in log
    # The settings it started with are logged, the password masked.
    assert "'kafka_security_protocol': 'SASL_SSL'" in log
    assert "'kafka_sasl_password': '***'" in log
    assert deployment.broker.principal("worker").password not in log


# -- (c) the command line with each role's file, within its ACLs ------------------------------


def test_publish_and_watch_with_the_producer_and_operator_files(deployment: Deployment) -> None:
    did = "did:mesh:secure-cli-1"
    producer = deployment.env("producer-output_quality")
    sent = run_cli(
        producer, "publish", "--agent", did, "--dimension", "output_quality", "--value", "0.9"
    )
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.strip() == "published 1 signal"

    other = run_cli(
        producer, "publish", "--agent", did, "--dimension", "security_posture", "--value", "0.9"
    )
    assert other.returncode == 2
    assert other.stderr.count("\n") == 1, other.stderr
    assert "refused 'producer-output_quality'" in other.stderr
    assert f"{deployment.prefix}signals.security_posture" in other.stderr

    for reader in ("operator", "scores-reader"):
        watched = run_cli(
            deployment.env(reader),
            "watch",
            "scores",
            "--from-beginning",
            "--json",
            "--max-messages",
            "1",
            "--timeout",
            "60",
            timeout=90,
        )
        assert watched.returncode == 0, watched.stderr
        assert json.loads(watched.stdout.splitlines()[0])["agent_did"].startswith("did:mesh:")


def test_config_get_and_set_with_the_operator_file_are_refused_to_a_producer(
    deployment: Deployment,
) -> None:
    operator = deployment.env("operator")
    got = run_cli(operator, "config", "get")
    assert got.returncode == 0, got.stderr
    before = json.loads(got.stdout)

    changed = run_cli(operator, "config", "set", "--warning-threshold", "520")
    assert changed.returncode == 0, changed.stderr
    after = json.loads(run_cli(operator, "config", "get").stdout)
    assert after["warning_threshold"] == 520
    assert after["version"] > before["version"]
    restored = run_cli(operator, "config", "set", "--warning-threshold", "500")
    assert restored.returncode == 0, restored.stderr

    producer = deployment.env("producer-policy_compliance")
    refused = run_cli(producer, "config", "set", "--warning-threshold", "400")
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1, refused.stderr
    assert "refused 'producer-policy_compliance'" in refused.stderr
    assert "TOPIC_AUTHORIZATION_FAILED" in refused.stderr
    final = json.loads(run_cli(operator, "config", "get").stdout)
    assert final["warning_threshold"] == 500, "a refused change changed nothing"


async def test_reinstate_with_the_operator_file_is_refused_to_a_producer(
    deployment: Deployment,
) -> None:
    did = "did:mesh:secure-reinstated"
    # Zeros on two dimensions, as the fleet's revoked agents send, each by its own producer.
    for dimension in ("security_posture", "policy_compliance"):
        settings = deployment.settings(f"producer-{dimension}")
        async with SignalPublisher.from_settings(settings) as publisher:
            for _ in range(6):
                await publisher.record_signal(did, dimension, 0.0, "secure-test")
    await read_until(
        deployment.options("security-team"),
        deployment.names.revocations,
        lambda bodies: any(b["agent_did"] == did for b in bodies),
        timeout=60,
        what=f"the revocation of {did}",
    )

    producer = deployment.env("producer-security_posture")
    refused = await asyncio.to_thread(
        run_cli, producer, "reinstate", "--agent", did, "--reason", "not mine to lift"
    )
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1, refused.stderr
    assert "refused 'producer-security_posture'" in refused.stderr

    lifted = await asyncio.to_thread(
        run_cli,
        deployment.env("operator"),
        "reinstate",
        "--agent",
        did,
        "--reason",
        "reviewed",
        "--timeout",
        "30",
        timeout=90,
    )
    assert lifted.returncode == 0, lifted.stderr
    audit = json.loads(lifted.stdout)
    assert audit["type"] == "reinstated"
    assert audit["agent_did"] == did
