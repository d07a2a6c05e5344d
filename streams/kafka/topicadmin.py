"""Creating the service's topics and refusing to run on topics that cannot work.

An agent's signals, ticks, score updates and revocations must all live on the same partition
number, so every co-partitioned topic needs the same partition count. Faust does not check this (it
silently groups mismatched topics apart), so the worker checks before it starts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, TopicAuthorizationFailedError

from streams.errors import TopicLayoutError
from streams.kafka import clients
from streams.kafka.topics import TopicNames
from streams.processing.config_topic import MAX_CONFIG_RECORD_BYTES
from streams.settings import Settings

log = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = TopicAlreadyExistsError.errno
#: Ticks only matter until their offsets are committed; keep them an hour.
_TICK_RETENTION_MS = str(60 * 60 * 1000)
#: The config topic keeps every record it ever had. Compacted (every update shares one key), a
#: forged record would remove the last valid configuration and workers would fall back to the
#: defaults; kept whole, the newest valid record always survives, an update's version (its offset
#: + 1) never changes, and the topic is the audit trail of configuration changes. No legitimate
#: configuration comes near 64 KiB, so larger records are refused by the broker.
CONFIG_TOPIC_CONFIGS: dict[str, str] = {
    "cleanup.policy": "delete",
    "retention.ms": "-1",
    "retention.bytes": "-1",
    "max.message.bytes": str(MAX_CONFIG_RECORD_BYTES),
}
#: DescribeConfigs' config_source of a value set on the topic itself (v1 and later).
_DYNAMIC_TOPIC_CONFIG = 1


@dataclass(frozen=True, slots=True)
class TopicReport:
    created: tuple[str, ...]
    existing: dict[str, int]
    #: Settings of an existing config topic changed to CONFIG_TOPIC_CONFIGS: name -> (was, now).
    config_topic_changes: dict[str, tuple[str | None, str]] = field(default_factory=dict)


def _topic_configs(name: str, names: TopicNames) -> dict[str, str]:
    if name == names.ticks:
        return {"retention.ms": _TICK_RETENTION_MS}
    if name == names.config:
        return dict(CONFIG_TOPIC_CONFIGS)
    if name == names.agent_state:
        return {"cleanup.policy": "compact"}
    return {}


async def _describe_topic_config(
    admin: AIOKafkaAdminClient, topic: str
) -> tuple[dict[str, str | None], dict[str, str]]:
    """(every effective setting of the topic, the ones set on the topic itself)."""
    responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    effective: dict[str, str | None] = {}
    overrides: dict[str, str] = {}
    for response in responses:
        for resource in response.to_object()["resources"]:
            if resource["error_code"] != 0:
                raise TopicLayoutError(
                    f"could not read the settings of topic {topic}: error code "
                    f"{resource['error_code']} ({resource['error_message']})"
                )
            for entry in resource["config_entries"]:
                name, value = entry["config_names"], entry["config_value"]
                effective[name] = value
                if "config_source" in entry:  # v1 and later
                    overridden = entry["config_source"] == _DYNAMIC_TOPIC_CONFIG
                else:
                    overridden = not entry["is_default"]
                if overridden and value is not None:
                    overrides[name] = value
    return effective, overrides


async def enforce_config_topic_settings(
    admin: AIOKafkaAdminClient, topic: str
) -> dict[str, tuple[str | None, str]]:
    """Give an existing config topic CONFIG_TOPIC_CONFIGS; returns what changed (was, now).

    Older deployments created it compacted. AlterConfigs replaces every setting made on the topic,
    so the topic's other settings are sent along unchanged.
    """
    effective, overrides = await _describe_topic_config(admin, topic)
    changes: dict[str, tuple[str | None, str]] = {
        name: (effective.get(name), wanted)
        for name, wanted in CONFIG_TOPIC_CONFIGS.items()
        if effective.get(name) != wanted
    }
    if not changes:
        return changes
    resource = ConfigResource(
        ConfigResourceType.TOPIC, topic, configs={**overrides, **CONFIG_TOPIC_CONFIGS}
    )
    for response in await admin.alter_configs([resource]):
        for code, message, *_ in response.resources:
            if code != 0:
                raise TopicLayoutError(
                    f"could not change the settings of topic {topic} to "
                    f"{CONFIG_TOPIC_CONFIGS}: error code {code} ({message})"
                )
    # The broker applies the change a moment later: return once it is in effect.
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        effective, _ = await _describe_topic_config(admin, topic)
        if all(effective.get(name) == wanted for name, wanted in CONFIG_TOPIC_CONFIGS.items()):
            break
        await asyncio.sleep(0.1)
    else:
        raise TopicLayoutError(f"settings of topic {topic} still not in effect after 30 s")
    log.warning(
        "Config topic %s now keeps its whole history; changed %s",
        topic,
        ", ".join(f"{name} from {was} to {now}" for name, (was, now) in changes.items()),
    )
    return changes


async def describe_partition_counts(
    admin: AIOKafkaAdminClient, topics: Sequence[str]
) -> dict[str, int]:
    """Partition count of each topic that exists (topics that do not are left out);
    :class:`TopicAuthorizationFailedError` for a topic the client may not describe."""
    counts: dict[str, int] = {}
    for entry in await admin.describe_topics(list(topics)):
        if entry["error_code"] == TopicAuthorizationFailedError.errno:
            # What a broker with ACLs answers for a topic the client may not see, existing or not.
            raise TopicAuthorizationFailedError(entry["topic"])
        if entry["error_code"] == 0:
            counts[entry["topic"]] = len(entry["partitions"])
    return counts


async def ensure_topics(settings: Settings, *, create: bool = True) -> TopicReport:
    """Create missing topics, verify every co-partitioned topic has the configured count, and
    give an existing config topic the settings of CONFIG_TOPIC_CONFIGS."""
    names = TopicNames(settings.topic_prefix)
    wanted = list(names.all)
    admin = clients.admin(settings, purpose="topic-admin")
    await admin.start()
    try:
        existing = await describe_partition_counts(admin, wanted)
        missing = [t for t in wanted if t not in existing]
        created: list[str] = []
        if missing and create:
            response = await admin.create_topics(
                [
                    NewTopic(
                        t,
                        1 if t == names.config else settings.partitions,
                        settings.replication_factor,
                        topic_configs=_topic_configs(t, names),
                    )
                    for t in missing
                ]
            )
            for topic, code, *_ in response.topic_errors:
                if code not in (0, _TOPIC_ALREADY_EXISTS):
                    raise TopicLayoutError(f"could not create topic {topic}: error code {code}")
                if code == 0:
                    created.append(topic)
            existing = await _wait_until_visible(admin, wanted)
        check_layout(names, existing, settings.partitions)
        if created:
            log.info("Created topics: %s", ", ".join(created))
        changes: dict[str, tuple[str | None, str]] = {}
        if create and names.config in existing and names.config not in created:
            changes = await _migrate_config_topic(admin, names.config)
        return TopicReport(tuple(created), existing, changes)
    finally:
        await admin.close()


async def _migrate_config_topic(
    admin: AIOKafkaAdminClient, topic: str
) -> dict[str, tuple[str | None, str]]:
    # Not fatal: workers still ignore invalid records, only a compacted topic could lose the last
    # valid one. A worker without the right to alter topics says so and runs.
    try:
        return await enforce_config_topic_settings(admin, topic)
    except (TopicLayoutError, KafkaError) as exc:
        log.error(
            "Config topic %s could not be given %s (%s); a compacted config topic can lose its "
            "last valid configuration to a forged record. Set these on the topic by hand.",
            topic,
            CONFIG_TOPIC_CONFIGS,
            exc,
        )
        return {}


async def _wait_until_visible(
    admin: AIOKafkaAdminClient, topics: Sequence[str], timeout: float = 30.0
) -> dict[str, int]:
    """Topic metadata reaches every broker a moment after creation; wait for it, not longer."""
    deadline = time.monotonic() + timeout
    while True:
        counts = await describe_partition_counts(admin, topics)
        if len(counts) == len(topics) or time.monotonic() > deadline:
            return counts
        await asyncio.sleep(0.1)


def check_layout(names: TopicNames, counts: dict[str, int], partitions: int) -> None:
    missing = [t for t in names.copartitioned if t not in counts]
    if missing:
        raise TopicLayoutError(f"topics missing: {', '.join(missing)}")
    found = {t: counts[t] for t in names.copartitioned}
    if len(set(found.values())) > 1:
        listed = ", ".join(f"{t}={n}" for t, n in found.items())
        raise TopicLayoutError(
            "signal, tick, score and revocation topics must share one partition count, but they "
            f"have {listed}. Repartition them to one count (or point TRUST_TOPIC_PREFIX at a "
            "fresh set of topics) before starting the worker."
        )
    actual = next(iter(found.values()))
    if actual != partitions:
        raise TopicLayoutError(
            f"topics have {actual} partitions but TRUST_PARTITIONS is {partitions}; set "
            f"TRUST_PARTITIONS={actual} to use them as they are"
        )
