"""A restore outlives its broker: killed while a partition's changelog is being read, then
started again, the broker is waited for and the restore finishes with every key's newest value
and the offset it reached. Run against a private broker (killing the shared one would break
every other test)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from aiokafka import AIOKafkaProducer

from streams.kafka.clients import KafkaConnection
from streams.state.changelog import PERSISTED_OFFSET_KEY
from streams.state.restore import restore_partitions
from streams.state.store import StateStore
from tests.support.kafka_io import create_topics
from tests.support.private_broker import PrivateBroker

TOPIC = "restore-under-fault.agent-state"
PARTITIONS = 3
KEYS = 20_000
ROUNDS = 4


async def _changelog(bootstrap: str) -> tuple[dict[bytes, bytes | None], dict[int, int]]:
    """ROUNDS versions of KEYS keys (every 50th deleted in the last round): the newest value of
    each key, and each partition's last offset."""
    await create_topics(bootstrap, [TOPIC], PARTITIONS)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, compression_type="zstd", linger_ms=20, acks="all"
    )
    await producer.start()
    newest: dict[bytes, bytes | None] = {}
    last: dict[int, int] = {}
    try:
        pending = []
        for version in range(ROUNDS):
            for i in range(KEYS):
                key = f"did:mesh:restored-{i:06d}".encode()
                deleted = version == ROUNDS - 1 and i % 50 == 0
                value = None if deleted else f'[4,"v{version}","{"x" * 200}",{i}]'.encode()
                newest[key] = value
                pending.append(await producer.send(TOPIC, value, key=key))
        for sent in await asyncio.gather(*pending):
            last[sent.partition] = max(last.get(sent.partition, -1), sent.offset)
    finally:
        await producer.stop()
    return newest, last


async def test_a_restore_waits_out_a_killed_broker_and_finishes_exactly(
    private_broker: PrivateBroker, tmp_path: Path
) -> None:
    newest, last = await _changelog(private_broker.address)
    store = StateStore(state_dir=tmp_path, changelog_topic=TOPIC, producer=lambda: None)
    # Small fetches, so that the restore is still reading when the broker dies.
    restore = asyncio.ensure_future(
        restore_partitions(
            store,
            KafkaConnection(private_broker.address),
            range(PARTITIONS),
            fetch_bytes_per_partition=16 * 1024,
        )
    )
    deadline = time.monotonic() + 30
    while not any(store.persisted_offset(p) >= 0 for p in range(PARTITIONS)):
        assert time.monotonic() < deadline, "the restore never started writing"
        await asyncio.sleep(0.01)
    assert not restore.done()
    await asyncio.to_thread(private_broker.kill)
    await asyncio.sleep(3)
    assert not restore.done(), "the restore ended while the broker was dead"
    await asyncio.to_thread(private_broker.start)
    report = await asyncio.wait_for(restore, timeout=120)

    assert report.records >= len(newest)
    for partition in range(PARTITIONS):
        assert store.persisted_offset(partition) == last[partition]
    held = {}
    for partition in range(PARTITIONS):
        for key, value in store.db(partition).items():
            if key != PERSISTED_OFFSET_KEY:
                held[key] = value
    assert held == {key: value for key, value in newest.items() if value is not None}
