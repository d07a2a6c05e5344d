"""The broker the suite runs against is a real one: records go in and come back out."""

from __future__ import annotations

from tests.support.kafka_io import consume, create_topics, produce, unique_name


async def test_produce_and_consume_roundtrip(kafka_bootstrap: str) -> None:
    topic = unique_name("roundtrip")
    await create_topics(kafka_bootstrap, [topic], partitions=3)
    sent = [(topic, f"did:test:{i}".encode(), f'{{"n": {i}}}'.encode()) for i in range(50)]

    await produce(kafka_bootstrap, sent)
    records = await consume(
        kafka_bootstrap, [topic], until=lambda r: len(r) >= 50, timeout=30, what="50 records"
    )

    assert sorted((r.key, r.value) for r in records) == sorted((k, v) for _, k, v in sent)
    # Same key, same partition: the property the whole service relies on.
    partition_of_key: dict[bytes | None, set[int]] = {}
    for r in records:
        partition_of_key.setdefault(r.key, set()).add(r.partition)
    assert all(len(parts) == 1 for parts in partition_of_key.values())
    assert len({r.partition for r in records}) > 1
