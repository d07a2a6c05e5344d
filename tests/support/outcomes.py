"""What a run must have published in the end, judged by the oracle: final scores, revocations.

For streams whose final scores do not depend on how the worker interleaves its five signal topics:
agents that never send a critical value (< 0.3) are recalculated only at window closes, over
everything applied; agents that send only zeros can only fall, and every order revokes them.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict

from aiokafka import AIOKafkaConsumer, TopicPartition

from tests.oracle import DIMENSIONS, OracleAgent

from .kafka_io import Record, consume
from .signals import Fleet, dedupe_updates, latest_update_per_agent, lifetime_signals


def steady_stream(
    fleet: Fleet, rng: random.Random, agents: list[str], count: int
) -> list[tuple[str, bytes, bytes]]:
    """``count`` signals: every tenth agent sends zeros only, the others never a critical value."""
    records = []
    for _ in range(count):
        i = rng.randrange(len(agents))
        if i % 10 == 0:
            dimension, value = rng.choice(("security_posture", "policy_compliance")), 0.0
        else:
            dimension, value = rng.choice(DIMENSIONS), rng.choice((1.0, 0.8, rng.uniform(0.3, 1)))
        records.append(fleet.record(agents[i], dimension, value))
    return records


async def read_to_end(bootstrap: str, topic: str, timeout: float = 60) -> list[Record]:
    """Every record of ``topic`` up to its end as of now (all partitions)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        request_timeout_ms=10000,
    )
    await consumer.start()
    records: list[Record] = []
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer._client.force_metadata_update()  # a topic created moments ago
            partitions = consumer.partitions_for_topic(topic) or set()
        assert partitions, f"topic {topic} does not exist"
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        async with asyncio.timeout(timeout):
            while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
                batch = await consumer.getmany(timeout_ms=500)
                for messages in batch.values():
                    records.extend(
                        Record(m.topic, m.partition, m.offset, m.key, m.value, m.timestamp)
                        for m in messages
                    )
    finally:
        await consumer.stop()
    return records


async def assert_final_scores(
    bootstrap: str, prefix: str, fleet: Fleet, timeout: float
) -> dict[str, dict]:  # type: ignore[type-arg]
    """Wait until every agent's latest update counts all its signals; each equals the oracle.

    Repeated updates of an (agent, window) must be identical. Returns the latest per agent.
    """

    def complete(records: list[Record]) -> bool:
        latest = latest_update_per_agent(list(dedupe_updates([r.json() for r in records]).values()))
        return all(
            did in latest and lifetime_signals(latest[did]) == len(sent)
            for did, sent in fleet.sent.items()
        )

    records = await consume(
        bootstrap,
        [f"{prefix}trust.scores"],
        until=complete,
        timeout=timeout,
        what=f"updates counting every signal of {len(fleet.sent)} agents",
    )
    latest = latest_update_per_agent(list(dedupe_updates([r.json() for r in records]).values()))
    for did, sent in fleet.sent.items():
        oracle = OracleAgent.replay(sent)
        final = latest[did]
        assert final["total_score"] == oracle.total_score, (did, final, oracle.total_score)
        assert final["revoked"] is oracle.revoked, did
        for d in DIMENSIONS:
            assert final["dimensions"][d]["signal_count"] == oracle.lifetime_counts[d], (did, d)
            assert final["dimensions"][d]["score"] == oracle.dimension_scores()[d], (did, d)
    return latest


async def assert_revocations_exact(bootstrap: str, prefix: str, fleet: Fleet) -> int:
    """Exactly the agents the oracle revokes are revoked, each once: a repeat of a revocation
    (after a fault) must be byte-identical to the first. Returns the number of records read."""
    expected = {did for did, sent in fleet.sent.items() if OracleAgent.replay(sent).revoked}
    records = await read_to_end(bootstrap, f"{prefix}trust.revocations")
    by_agent: dict[str, list[bytes]] = defaultdict(list)
    for record in records:
        assert record.value is not None
        by_agent[record.json()["agent_did"]].append(record.value)
    missing, extra = sorted(expected - set(by_agent)), sorted(set(by_agent) - expected)
    assert not missing and not extra, (
        f"revoked {len(by_agent)} agents, the oracle {len(expected)}; "
        f"missing {missing[:5]}, extra {extra[:5]}"
    )
    for did, values in by_agent.items():
        assert all(v == values[0] for v in values), f"{did}: revocations differ: {values}"
    return len(records)
