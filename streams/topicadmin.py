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
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from .errors import TopicLayoutError
from .settings import Settings
from .topics import TopicNames

log = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = TopicAlreadyExistsError.errno
#: Ticks only matter until their offsets are committed; keep them an hour.
_TICK_RETENTION_MS = str(60 * 60 * 1000)


@dataclass(frozen=True, slots=True)
class TopicReport:
    created: tuple[str, ...]
    existing: dict[str, int]


def _topic_configs(name: str, names: TopicNames) -> dict[str, str]:
    if name == names.ticks:
        return {"retention.ms": _TICK_RETENTION_MS}
    if name in (names.config, names.agent_state):
        return {"cleanup.policy": "compact"}
    return {}


async def describe_partition_counts(
    admin: AIOKafkaAdminClient, topics: Sequence[str]
) -> dict[str, int]:
    """Partition count of each topic that exists (topics that do not are left out)."""
    counts: dict[str, int] = {}
    for entry in await admin.describe_topics(list(topics)):
        if entry["error_code"] == 0:
            counts[entry["topic"]] = len(entry["partitions"])
    return counts


async def ensure_topics(settings: Settings, *, create: bool = True) -> TopicReport:
    """Create missing topics, then verify every co-partitioned topic has the configured count."""
    names = TopicNames(settings.topic_prefix)
    wanted = list(names.all)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers, request_timeout_ms=15000
    )
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
        return TopicReport(tuple(created), existing)
    finally:
        await admin.close()


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
