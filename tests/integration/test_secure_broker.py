"""The secured broker (``deploy/local/kafka start --secure``) and the ACL set (deploy/acls.py).

Against the real secured broker, with plain aiokafka clients logging in as each principal: who
cannot connect at all, and what each principal may and may not do once the ACL set is applied
to a test's own topic prefix.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    TopicAuthorizationFailedError,
)

from streams.kafka.topics import TopicNames
from tests.support.events import EventStream
from tests.support.secure_broker import (
    ACLS_SCRIPT,
    SecureBroker,
    acls_module,
)
from tests.support.signals import signal_value
from tests.support.worker import WorkerProcess, worker_env

READY_PROBE = ACLS_SCRIPT.parent / "local" / "kafka_ready.py"
TIMEOUT = 20.0


@pytest.fixture
async def names(secure_broker: SecureBroker, topic_prefix: str) -> AsyncIterator[TopicNames]:
    """This test's topics, created by admin, with the ACL set applied to their prefix."""
    acls = acls_module()
    names = TopicNames(topic_prefix)
    admin_options = secure_broker.admin.client_options()
    admin = AIOKafkaAdminClient(**admin_options, request_timeout_ms=10_000)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, 1, 1) for t in names.all])
    finally:
        await admin.close()
    bindings = acls.acl_set(acls.Deployment(topic_prefix, f"{topic_prefix}scorer"))
    await acls.apply(admin_options, bindings)
    yield names
    await acls.remove(admin_options, bindings)
    admin = AIOKafkaAdminClient(**admin_options, request_timeout_ms=10_000)
    await admin.start()
    try:
        await admin.delete_topics(list(names.all))
    finally:
        await admin.close()


# --- clients as a principal ---------------------------------------------------------------------


async def produce(
    options: dict[str, Any], topic: str, value: bytes = b"{}", key: bytes = b"did:mesh:a"
) -> int:
    """Send one record to partition 0 and wait for its acknowledgement; its offset."""
    producer = AIOKafkaProducer(**options, acks="all", request_timeout_ms=10_000)
    await producer.start()
    try:
        metadata = await asyncio.wait_for(
            producer.send_and_wait(topic, value, key=key, partition=0), TIMEOUT
        )
        return int(metadata.offset)
    finally:
        await producer.stop()


async def refused_write(options: dict[str, Any], topic: str) -> None:
    with pytest.raises(TopicAuthorizationFailedError):
        await produce(options, topic)


async def read_one(options: dict[str, Any], topic: str, group_id: str | None = None) -> bytes:
    """The first record of partition 0 of ``topic`` (in a consumer group when given: the group
    is joined and the offset committed, which the group's ACL must allow)."""
    consumer = AIOKafkaConsumer(
        **options,
        group_id=group_id,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        request_timeout_ms=10_000,
    )
    if group_id is None:
        consumer.assign([TopicPartition(topic, 0)])
    else:
        consumer.subscribe([topic])
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), TIMEOUT)
        if group_id is not None:
            await consumer.commit()
        assert record.value is not None
        return record.value
    finally:
        await consumer.stop()


async def refused_read(options: dict[str, Any], topic: str) -> None:
    """Reading partition 0 of ``topic`` is refused by the broker, not merely empty: when starting
    (a principal that may not even describe the topic learns nothing of it) or at the fetch."""
    consumer = AIOKafkaConsumer(
        **options, group_id=None, enable_auto_commit=False, request_timeout_ms=10_000
    )
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            await consumer.start()
            consumer.seek(tp, 0)
            await asyncio.wait_for(consumer.getmany(tp, timeout_ms=int(TIMEOUT * 1000)), TIMEOUT)
    finally:
        await consumer.stop()


async def connects(options: dict[str, Any]) -> None:
    admin = AIOKafkaAdminClient(**options, request_timeout_ms=5_000)
    try:
        await admin.start()
        assert (await admin.describe_cluster())["brokers"], "connected, but no brokers listed"
    finally:
        await admin.close()


# --- authentication -----------------------------------------------------------------------------


async def test_no_credentials_and_wrong_password_cannot_connect(
    secure_broker: SecureBroker,
) -> None:
    worker = secure_broker.principal("worker")
    await connects(worker.client_options())  # the control: the right password does

    no_tls_no_sasl = {"bootstrap_servers": secure_broker.address}
    tls_only = {
        "bootstrap_servers": secure_broker.address,
        "security_protocol": "SSL",
        "ssl_context": worker.client_options()["ssl_context"],
    }
    wrong_password = worker.client_options(password=worker.password[::-1])
    unknown_user = {**worker.client_options(), "sasl_plain_username": "nobody"}
    for options in (no_tls_no_sasl, tls_only, wrong_password, unknown_user):
        with pytest.raises(KafkaConnectionError):
            await connects(options)


def test_readiness_probe_authenticates(secure_broker: SecureBroker, tmp_path: Path) -> None:
    admin_env = secure_broker.env_file("admin")
    ready = subprocess.run(
        [sys.executable, str(READY_PROBE), "--env", str(admin_env), "-v"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ready.returncode == 0, ready.stderr
    assert f"ready: {secure_broker.address}" in ready.stdout

    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password\n")
    refused = subprocess.run(
        [
            sys.executable,
            str(READY_PROBE),
            "--env",
            str(admin_env),
            "--sasl-password-file",
            str(wrong),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 1
    assert "authentication as admin failed" in refused.stderr, refused.stderr


def test_the_controller_listener_takes_only_the_brokers_own_certificate(
    secure_broker: SecureBroker,
) -> None:
    properties = (secure_broker.home / "server.properties").read_text()
    voters = next(line for line in properties.splitlines() if line.startswith("controller.quorum"))
    controller = voters.split("@", 1)[1]
    tls = secure_broker.home / "tls"
    ca = ["--security-protocol", "SSL", "--cafile", str(tls / "ca.pem")]

    def probe(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(READY_PROBE), "--timeout", "5", *args, controller],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    # With the broker's certificate the TLS session and ApiVersions go through (a controller
    # serves no Metadata, which is how far the probe gets); without it, or in plaintext, nothing.
    own = probe(*ca, "--certfile", str(tls / "broker.pem"), "--keyfile", str(tls / "broker.key"))
    assert "does not list the Metadata API" in own.stderr, own.stderr
    for refused in (probe(*ca), probe()):
        assert refused.returncode == 1
        assert "ApiVersions" not in refused.stderr and "Metadata" not in refused.stderr, (
            refused.stderr
        )


# --- authorization: the ACL set -----------------------------------------------------------------


async def test_a_producer_writes_only_its_own_dimension(
    secure_broker: SecureBroker, names: TopicNames
) -> None:
    producer = secure_broker.principal("producer-policy_compliance").client_options()
    own, other = names.signals[0], names.signals[3]
    assert own.endswith("policy_compliance") and other.endswith("security_posture")

    await produce(producer, own)
    for topic in (
        other,
        names.ticks,
        names.commands,
        names.config,
        names.agent_state,
        names.scores,
        names.revocations,
        names.deadletter,
    ):
        await refused_write(producer, topic)
    await refused_read(producer, own)


async def test_security_team_reads_revocations_only(
    secure_broker: SecureBroker, names: TopicNames
) -> None:
    worker = secure_broker.principal("worker").client_options()
    team = secure_broker.principal("security-team").client_options()
    revocation = b'{"agent_did": "did:mesh:a", "type": "revoked"}'
    await produce(worker, names.revocations, revocation)
    await produce(
        secure_broker.principal("producer-security_posture").client_options(), names.signals[3]
    )

    group = f"{names.prefix}security-team-siem"
    assert await read_one(team, names.revocations, group_id=group) == revocation
    await refused_write(team, names.revocations)
    await refused_read(team, names.signals[3])
    await refused_read(team, names.scores)
    with pytest.raises(GroupAuthorizationFailedError):
        await read_one(team, names.revocations, group_id=f"{names.prefix}someone-else")


async def test_scores_reader_reads_scores_only(
    secure_broker: SecureBroker, names: TopicNames
) -> None:
    worker = secure_broker.principal("worker").client_options()
    reader = secure_broker.principal("scores-reader").client_options()
    score = b'{"agent_did": "did:mesh:a", "score": 812}'
    await produce(worker, names.scores, score)
    await produce(worker, names.revocations)

    assert await read_one(reader, names.scores, group_id=f"{names.prefix}scores-reader-1") == score
    assert await read_one(reader, names.scores) == score
    await refused_read(reader, names.revocations)
    await refused_read(reader, names.signals[0])
    await refused_write(reader, names.scores)


async def test_operator_writes_config_and_commands_not_signals(
    secure_broker: SecureBroker, names: TopicNames
) -> None:
    operator = secure_broker.principal("operator").client_options()
    await produce(operator, names.config, b'{"weights": {}}')
    await produce(operator, names.commands, b'{"type": "reinstate"}')
    assert await read_one(operator, names.config) == b'{"weights": {}}'

    for topic in (*names.signals, names.ticks, names.agent_state, names.scores):
        await refused_write(operator, topic)


async def test_ticks_and_the_state_changelog_are_written_by_the_worker_alone(
    secure_broker: SecureBroker, names: TopicNames
) -> None:
    worker = secure_broker.principal("worker").client_options()
    for topic in (names.ticks, names.commands, names.config, names.agent_state):
        await produce(worker, topic)
    for topic in (names.ticks, names.agent_state):
        for role in ("operator", "security-team", "scores-reader", "producer-output_quality"):
            await refused_write(secure_broker.principal(role).client_options(), topic)


# --- the ACL set as code ------------------------------------------------------------------------


async def test_acls_cli_applies_and_removes_the_set_for_a_prefix(
    secure_broker: SecureBroker, topic_prefix: str
) -> None:
    acls = acls_module()
    admin_options = secure_broker.admin.client_options()
    app_id = f"{topic_prefix}scorer"  # not the default: removing must not touch the default set
    wanted = set(acls.acl_set(acls.Deployment(topic_prefix, app_id)))

    def cli(command: str, principal: str = "admin") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                str(ACLS_SCRIPT),
                command,
                "--env",
                str(secure_broker.env_file(principal)),
                "--prefix",
                topic_prefix,
                "--app-id",
                app_id,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    async def in_force() -> set[Any]:
        async with acls.AclAdmin(admin_options) as admin:
            return wanted & await admin.describe()

    for _ in range(2):  # applying again changes nothing
        applied = await asyncio.to_thread(cli, "apply")
        assert applied.returncode == 0, applied.stderr
        assert f"{len(wanted)} bindings in force" in applied.stdout
        assert await in_force() == wanted

    removed = await asyncio.to_thread(cli, "remove")
    assert removed.returncode == 0, removed.stderr
    assert not await in_force(), "remove returns once the bindings are gone"

    refused = await asyncio.to_thread(cli, "apply", "operator")
    assert refused.returncode == 1, "a principal that is not admin must not change the ACLs"
    assert "error code 31" in refused.stderr, refused.stderr  # CLUSTER_AUTHORIZATION_FAILED


# --- the worker under its own principal ---------------------------------------------------------


async def test_the_worker_runs_and_scores_with_only_its_own_acls(
    secure_broker: SecureBroker, topic_prefix: str, tmp_path: Path
) -> None:
    """No topic exists beforehand: the worker creates its own and Faust's, joins its group,
    reads a producer's signal and publishes the score, all as ``worker`` with the set's ACLs."""
    acls = acls_module()
    admin_options = secure_broker.admin.client_options()
    names = TopicNames(topic_prefix)
    app_id = f"{topic_prefix}scorer"
    bindings = acls.acl_set(acls.Deployment(topic_prefix, app_id))
    await acls.apply(admin_options, bindings)
    env = worker_env(
        secure_broker.address,
        topic_prefix,
        tmp_path / "state",
        partitions=1,
        app_id=app_id,
        window_seconds="2",
        grace_seconds="0",
    )
    env.update(secure_broker.principal("worker").env)
    worker = WorkerProcess(env=env, log_path=tmp_path / "worker.log").start()
    try:
        await asyncio.to_thread(worker.wait_until_ready, 120.0)
        # The dashboard's stream reads the outputs back, as worker too.
        stream = await asyncio.to_thread(EventStream, worker.base_url)
        await asyncio.to_thread(stream.live)
        did = "did:mesh:secure-1"
        producer = secure_broker.principal("producer-policy_compliance").client_options()
        await produce(producer, names.signals[0], signal_value(did, 0.9), key=did.encode())
        reader = secure_broker.principal("scores-reader").client_options()
        score = orjson.loads(await read_one(reader, names.scores))
        assert score["agent_did"] == did, score
        streamed = await asyncio.to_thread(stream.until, "score", lambda b: b["agent_did"] == did)
        assert streamed == score
        stream.close()
    finally:
        worker.ensure_stopped()
        await acls.remove(admin_options, bindings)
    refused = [line for line in worker.log.splitlines() if "Authorization" in line]
    assert not refused, "the worker was refused something:\n" + "\n".join(refused[:20])
