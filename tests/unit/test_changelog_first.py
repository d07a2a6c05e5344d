"""The local database is always a prefix of the changelog: a state is written locally only once
Kafka has confirmed it, with the offset it reaches, and read from memory until then. So a worker
that dies at any point never restarts on local state the changelog lacks."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError

from streams.kafka.delivery import DeliveryHealth, Retrying
from streams.scoring.agent import AgentState
from streams.scoring.codec import encode_state
from streams.state.changelog import PERSISTED_OFFSET_KEY
from streams.state.localdb import open_partition_db
from streams.state.store import StateStore
from tests.support.fake_kafka import FakeBatch, FakeProducer


class HeldProducer(FakeProducer):
    """Stores nothing and answers nothing until released: a send whose acknowledgement has not
    come back (yet, or ever: the process dies first)."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[tuple[asyncio.Future[Any], str, int, list[tuple[Any, Any]]]] = []

    async def send_batch(
        self, batch: FakeBatch, topic: str, *, partition: int
    ) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.held.append((future, topic, partition, batch.rows))
        return future

    def release(self) -> None:
        held, self.held = self.held, []
        for future, topic, partition, rows in held:
            future.set_result(self._future(topic, partition, rows).result())


class FullBuffer(FakeProducer):
    """send_batch waits for buffer space, as aiokafka's does while the partition's previous
    batch has not gone out in a request yet."""

    def __init__(self) -> None:
        super().__init__()
        self.room = asyncio.Event()

    async def send_batch(
        self, batch: FakeBatch, topic: str, *, partition: int
    ) -> asyncio.Future[Any]:
        await self.room.wait()
        return await super().send_batch(batch, topic, partition=partition)


async def _confirm_answered(store: StateStore, producer: HeldProducer) -> None:
    """Confirm, the broker answering what was handed to it (sends are handed over by a task
    of the changelog's own, so not yet when a write returns)."""
    confirming = asyncio.ensure_future(store.confirm())
    await asyncio.sleep(0.01)
    producer.release()
    await confirming


def _store(directory: Path, producer: FakeProducer, **retrying: Any) -> StateStore:
    return StateStore(
        state_dir=directory,
        changelog_topic="changelog",
        producer=lambda: producer,
        delivery=Retrying(DeliveryHealth(), **retrying),
    )


def _local(directory: Path, partition: int = 0) -> dict[bytes, bytes]:
    """What a new worker finds in the partition's database (the old one abandoned)."""
    db = open_partition_db(directory / "agent-state" / f"partition-{partition}")
    try:
        return dict(db.items())  # type: ignore[arg-type]
    finally:
        db.close()


def _abandon(store: StateStore) -> None:
    """The process dies: nothing more happens to what it held in memory."""
    store.databases.close()


async def test_nothing_is_written_locally_before_the_changelog_confirms(tmp_path: Path) -> None:
    producer = HeldProducer()
    store = _store(tmp_path, producer)
    state = encode_state(AgentState(score=640))
    await store.write(0, [(b"did:a:1", state)])
    # Readable at once, from memory; not in the database.
    assert store.get(0, b"did:a:1") == state
    assert store.lookup(0, b"did:a:1") == AgentState(score=640)
    assert store.is_held(0, b"did:a:1")
    assert store.db(0).get(b"did:a:1") is None
    confirming = asyncio.ensure_future(store.confirm())
    await asyncio.sleep(0.01)
    assert not confirming.done() and store.db(0).get(b"did:a:1") is None
    producer.release()
    await confirming
    assert store.db(0).get(b"did:a:1") == state
    assert store.persisted_offset(0) == 0  # the one record, at offset 0
    assert not store.is_held(0, b"did:a:1")


async def test_a_worker_that_dies_before_the_confirmation_restarts_on_the_changelog_prefix(
    tmp_path: Path,
) -> None:
    producer = HeldProducer()
    store = _store(tmp_path, producer)
    await store.write(0, [(b"did:a:1", b"one")])
    await _confirm_answered(store, producer)
    # Sent, never confirmed: the second value and the positions written after it.
    await store.write(0, [(b"did:a:1", b"two"), (b"did:a:2", b"new")])
    await store.write(0, [(b"\x00signal-positions", b"[7,7,7,7,7]")])
    _abandon(store)
    assert _local(tmp_path) == {b"did:a:1": b"one", PERSISTED_OFFSET_KEY: b"0"}


async def test_a_refused_batch_reaches_the_database_only_as_its_newest_value(
    tmp_path: Path,
) -> None:
    producer = FakeProducer()
    producer.refusing["changelog"] = KafkaTimeoutError()
    delays: list[float] = []

    async def sleep(seconds: float) -> None:
        delays.append(seconds)
        assert producer.on("changelog") == []
        # Refused so far: nothing of it may be in the database.
        assert store.db(0).get(b"did:a:1") is None
        producer.refusing.clear()

    store = _store(tmp_path, producer, sleep=sleep)
    await store.write(0, [(b"did:a:1", b"first"), (b"did:a:2", b"x")])
    await store.write(0, [(b"did:a:1", b"second")])
    await store.confirm()
    assert len(delays) == 1
    # The resend carries the newest value of each key, once.
    assert producer.on("changelog") == [(b"did:a:1", b"second", 0), (b"did:a:2", b"x", 0)]
    local = _local_open(store)
    assert local == {b"did:a:1": b"second", b"did:a:2": b"x", PERSISTED_OFFSET_KEY: b"1"}


def _local_open(store: StateStore, partition: int = 0) -> dict[bytes, bytes]:
    return dict(store.db(partition).items())  # type: ignore[arg-type]


async def test_a_tombstone_deletes_locally_only_once_confirmed(tmp_path: Path) -> None:
    producer = HeldProducer()
    store = _store(tmp_path, producer)
    await store.write(0, [(b"did:a:1", encode_state(AgentState()))])
    await _confirm_answered(store, producer)
    await store.delete_agents(0, [b"did:a:1"])
    assert store.get(0, b"did:a:1") is None and store.lookup(0, b"did:a:1") is None
    assert [key for key, _ in store.iter_agents(0)] == []
    assert store.db(0).get(b"did:a:1") is not None  # until the tombstone is confirmed
    await _confirm_answered(store, producer)
    assert store.db(0).get(b"did:a:1") is None
    assert producer.on("changelog")[-1] == (b"did:a:1", None, 0)


async def test_unconfirmed_states_are_listed_with_the_stored_ones(tmp_path: Path) -> None:
    producer = HeldProducer()
    store = _store(tmp_path, producer)
    await store.write(0, [(b"did:a:1", encode_state(AgentState(score=100)))])
    await _confirm_answered(store, producer)
    await store.write(0, [(b"did:a:1", encode_state(AgentState(score=200)))])
    await store.write(0, [(b"did:a:2", encode_state(AgentState(score=300)))])
    assert {key: state.score for key, state in store.iter_agents(0)} == {
        b"did:a:1": 200,
        b"did:a:2": 300,
    }


async def test_a_confirmation_after_the_partition_was_given_up_writes_nothing(
    tmp_path: Path,
) -> None:
    producer = HeldProducer()
    store = _store(tmp_path, producer)
    await store.write(0, [(b"did:a:1", b"mine")])
    confirming = asyncio.ensure_future(store.confirm())
    await asyncio.sleep(0.01)
    # Given up (another worker owns it now, or the database was found damaged and wiped).
    store.forget({0})
    assert store.get(0, b"did:a:1") is None
    producer.release()
    await confirming
    assert store.db(0).get(b"did:a:1") is None
    assert store.persisted_offset(0) == -1


async def test_a_send_still_queueing_when_the_partition_is_given_up_is_not_written(
    tmp_path: Path,
) -> None:
    producer = FullBuffer()
    store = _store(tmp_path, producer)
    writing = asyncio.ensure_future(store.write(0, [(b"did:a:1", b"mine")]))
    await asyncio.sleep(0.01)
    store.forget({0})  # given up while the send waits
    producer.room.set()
    await writing
    await store.confirm()
    assert producer.on("changelog") == [(b"did:a:1", b"mine", 0)]  # Kafka has it
    assert store.db(0).get(b"did:a:1") is None  # this worker no longer writes it locally


async def test_changelog_batches_are_handed_over_closed_so_the_producer_sends_them_at_once(
    tmp_path: Path,
) -> None:
    # aiokafka holds an open batch for its linger time in case more records join it; the
    # changelog's batches are complete when handed over, and a revocation waits for them.
    producer = FakeProducer()
    store = _store(tmp_path, producer)
    await store.write(0, [(b"did:a:1", b"one"), (b"did:a:2", b"two")])
    await store.write(1, [(b"did:a:3", b"three")])
    await store.confirm()
    assert [batch.rows for batch in producer.batches] == [
        [(b"did:a:1", b"one"), (b"did:a:2", b"two")],
        [(b"did:a:3", b"three")],
    ]
    assert all(batch.closed for batch in producer.batches)


async def test_a_write_does_not_wait_for_the_producer_and_reaches_it_in_order(
    tmp_path: Path,
) -> None:
    producer = FullBuffer()
    store = _store(tmp_path, producer)
    # Each returns at once, though the producer takes nothing yet.
    async with asyncio.timeout(1):
        await store.write(0, [(b"did:a:1", b"one")])
        await store.write(1, [(b"did:a:2", b"two")])
        await store.write(0, [(b"did:a:1", b"three"), (b"did:a:3", b"four")])
    assert producer.batches == []
    assert store.get(0, b"did:a:1") == b"three"  # the newest, from memory
    confirming = asyncio.ensure_future(store.confirm())
    await asyncio.sleep(0.01)
    assert not confirming.done() and store.db(0).get(b"did:a:1") is None
    producer.room.set()
    await confirming
    assert [batch.rows for batch in producer.batches] == [
        [(b"did:a:1", b"one")],
        [(b"did:a:2", b"two")],
        [(b"did:a:1", b"three"), (b"did:a:3", b"four")],
    ]
    assert _local_open(store) == {
        b"did:a:1": b"three",
        b"did:a:3": b"four",
        PERSISTED_OFFSET_KEY: b"2",
    }


async def test_a_batch_the_producer_refuses_to_take_stops_every_later_write_and_confirmation(
    tmp_path: Path,
) -> None:
    class Closed(FakeProducer):
        async def send_batch(
            self, batch: FakeBatch, topic: str, *, partition: int
        ) -> asyncio.Future[Any]:
            raise KafkaTimeoutError("no room in the buffer for 40 s")

    store = _store(tmp_path, Closed())
    await store.write(0, [(b"did:a:1", b"one")])
    with pytest.raises(KafkaTimeoutError):
        await store.confirm()
    # Nothing that depends on the lost record may go ahead: positions written after it, say.
    with pytest.raises(KafkaTimeoutError):
        await store.write(0, [(b"\x00signal-positions", b"[7,7,7,7,7]")])
    with pytest.raises(KafkaTimeoutError):
        await store.confirm()
    assert store.db(0).get(b"did:a:1") is None


async def test_room_waits_until_the_producer_has_taken_all_but_the_last_write(
    tmp_path: Path,
) -> None:
    """What paces a checkpoint's slices: queued faster than the producer takes them, they would
    sit in front of a revocation's state."""

    class OneAtATime(FakeProducer):
        def __init__(self) -> None:
            super().__init__()
            self.room = asyncio.Semaphore(0)

        async def send_batch(
            self, batch: FakeBatch, topic: str, *, partition: int
        ) -> asyncio.Future[Any]:
            await self.room.acquire()
            return await super().send_batch(batch, topic, partition=partition)

    producer = OneAtATime()
    store = _store(tmp_path, producer)
    await store.write(0, [(b"did:a:1", b"one")])
    await store.changelog_room()  # one write waiting: room at once
    await store.write(0, [(b"did:a:2", b"two")])
    waiting = asyncio.ensure_future(store.changelog_room())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    producer.room.release()  # the first is taken
    await asyncio.wait_for(waiting, 1)
    assert [batch.rows for batch in producer.batches] == [[(b"did:a:1", b"one")]]
    producer.room.release()
    await store.confirm()
