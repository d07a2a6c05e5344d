"""Publishing trust signals: the producer side of the contract, for services that judge agents.

A service that judges an agent's action publishes one signal to the topic of the dimension it
judged. :class:`SignalPublisher` does that from async code, :class:`SyncSignalPublisher` from code
that is not::

    async with SignalPublisher("kafka:9092") as publisher:
        await publisher.record_policy_compliance("did:mesh:agent-42", compliant=False,
                                                 policy_name="no-external-email")

    with SyncSignalPublisher("kafka:9092") as publisher:
        publisher.record_output_quality("did:mesh:agent-42", accepted=True, consumer="billing")

Against a secured cluster, give the connection's security as parameters (the same, and checked
the same way, as the worker's ``TRUST_KAFKA_*`` settings), or take the worker's settings::

    SignalPublisher("kafka:9093", security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                    sasl_username="producer-policy_compliance", sasl_password=password,
                    ssl_cafile="/etc/trust/ca.pem")
    SignalPublisher.from_settings(Settings())

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

The package: :mod:`~streams.sdk.signals` builds and checks signals (pure),
:mod:`~streams.sdk.publisher` publishes them from async code, :mod:`~streams.sdk.sync` from code
that is not, and :mod:`~streams.sdk.recorder` defines the ``record_*`` calls once for both.
"""

from __future__ import annotations

from streams.sdk.errors import InvalidSignal, PublisherNotRunning, PublishFailed
from streams.sdk.publisher import (
    DEFAULT_CLIENT_ID,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_TOPIC_PREFIX,
    SignalPublisher,
)
from streams.sdk.signals import (
    PreparedSignal,
    collaboration_signal,
    output_quality_signal,
    partition_for,
    policy_compliance_signal,
    prepare_signal,
    resource_usage_signal,
    security_event_signal,
)
from streams.sdk.sync import SyncSignalPublisher

__all__ = [
    "DEFAULT_CLIENT_ID",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_TOPIC_PREFIX",
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
