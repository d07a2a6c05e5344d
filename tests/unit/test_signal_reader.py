"""The signal feed's reader, on fetch answers built byte for byte: what it hands over, where its
positions stand, and what it does with each partition error. Against a real broker it is used by
every worker in the integration tests (broker outages included)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka import errors as kafka_errors

from streams.kafka.signalreader import HELD_RECORDS, SignalReader
from tests.support.record_batches import ABORT, COMMIT, data_batch, marker

TOPIC = "signals.policy_compliance"
TP0, TP1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)
NO_ERROR, OFFSET_OUT_OF_RANGE, NOT_LEADER, TOPIC_AUTHORIZATION_FAILED = 0, 1, 6, 29


def answer(*parts: tuple[int, int, int, bytes], log_start: int = 0) -> Any:
    """A fetch response (v11): per partition (number, error, highwater, records)."""
    return SimpleNamespace(
        API_VERSION=11,
        topics=[(TOPIC, [(n, err, hw, hw, log_start, [], -1, data) for n, err, hw, data in parts])],
    )


def reader(*tps: TopicPartition) -> SignalReader:
    r = SignalReader(None, partition_bytes=1 << 20)  # type: ignore[arg-type]  # never started
    r._client = SimpleNamespace(force_metadata_update=lambda: None)
    r.assign(tps)
    return r


def asked(r: SignalReader, *tps: TopicPartition) -> dict[TopicPartition, int]:
    return {tp: r._fetch_at[tp] for tp in tps}


async def test_records_are_handed_over_in_order_and_the_position_follows_what_was_taken() -> None:
    r = reader(TP0, TP1)
    brought, failing = r._take(
        answer((0, NO_ERROR, 5, data_batch(0, 5)), (1, NO_ERROR, 2, data_batch(0, 2))),
        asked(r, TP0, TP1),
    )
    assert brought and not failing
    assert r.position(TP0) == 0  # fetched is not taken
    first = await r.getmany(max_records=3)
    assert [x.offset for x in first[TP0]] == [0, 1, 2] and TP1 not in first
    assert r.position(TP0) == 3
    rest = await r.getmany()
    assert [x.offset for x in rest[TP0]] == [3, 4] and [x.value for x in rest[TP1]] == [
        b"v0",
        b"v1",
    ]
    assert (r.position(TP0), r.position(TP1)) == (5, 2)
    assert r.highwater(TP0) == 5 and r.last_stable_offset(TP1) == 2


async def test_taking_a_partition_whole_moves_its_position_past_a_trailing_marker() -> None:
    """Otherwise a partition whose log ends in a transaction marker never looks caught up."""
    r = reader(TP0)
    log = data_batch(0, 2, producer_id=7, transactional=True) + marker(2, 7, COMMIT)
    r._take(answer((0, NO_ERROR, 3, log)), asked(r, TP0))
    assert [x.offset for x in (await r.getmany())[TP0]] == [0, 1]
    assert r.position(TP0) == 3 == r.last_stable_offset(TP0)


async def test_aborted_records_are_never_handed_over_and_markers_alone_move_the_position() -> None:
    r = reader(TP0)
    log = data_batch(0, 2, producer_id=7, transactional=True) + marker(2, 7, ABORT)
    response = answer((0, NO_ERROR, 3, log))
    response.topics[0][1][0] = (0, NO_ERROR, 3, 3, 0, [(7, 0)], -1, log)
    brought, _ = r._take(response, asked(r, TP0))
    assert not brought and await r.getmany() == {}
    assert r.position(TP0) == 3


async def test_a_paused_partition_is_neither_handed_over_nor_counted_as_waiting() -> None:
    r = reader(TP0, TP1)
    r._take(answer((0, NO_ERROR, 4, data_batch(0, 4))), asked(r, TP0))
    r.pause(TP0)
    started = asyncio.get_running_loop().time()
    assert await r.getmany(timeout_ms=50) == {}  # waited: nothing it could hand over
    assert asyncio.get_running_loop().time() - started >= 0.04
    r.resume(TP0)
    assert len((await r.getmany())[TP0]) == 4


async def test_a_seek_drops_what_was_held_and_an_answer_to_the_old_position() -> None:
    r = reader(TP0)
    before = asked(r, TP0)
    r._take(answer((0, NO_ERROR, 4, data_batch(0, 4))), before)
    r.seek(TP0, 10)
    assert await r.getmany() == {} and r.position(TP0) == 10
    brought, _ = r._take(answer((0, NO_ERROR, 4, data_batch(0, 4))), before)
    assert not brought and r._fetch_at[TP0] == 10


async def test_an_offset_outside_the_log_reads_on_from_its_start() -> None:
    r = reader(TP0)
    r.seek(TP0, 3)
    brought, failing = r._take(
        answer((0, OFFSET_OUT_OF_RANGE, 90, b""), log_start=40), asked(r, TP0)
    )
    assert not brought and not failing
    assert r._fetch_at[TP0] == 40 == r.position(TP0)


def test_a_moved_leader_is_retried_and_a_refusal_raises() -> None:
    r = reader(TP0)
    assert r._take(answer((0, NOT_LEADER, 0, b"")), asked(r, TP0)) == (False, True)
    assert r._fetch_at[TP0] == 0  # the same offset, once metadata is refreshed
    with pytest.raises(kafka_errors.TopicAuthorizationFailedError, match=r"\[0\].*offset 0"):
        r._take(answer((0, TOPIC_AUTHORIZATION_FAILED, 0, b"")), asked(r, TP0))


async def test_a_failed_fetch_loop_raises_in_the_feed() -> None:
    r = reader(TP0)
    r._fail(kafka_errors.TopicAuthorizationFailedError("refused"))
    with pytest.raises(kafka_errors.TopicAuthorizationFailedError):
        await r.getmany(timeout_ms=10)


async def test_fetching_waits_once_enough_is_held_for_the_feed() -> None:
    """The fetch loop of a broker stops asking while the feed has this much to take."""
    r = reader(TP0)
    sent: list[Any] = []

    async def send(node: int, request: Any) -> Any:
        sent.append(request)
        return answer((0, NO_ERROR, 10**9, data_batch(r._fetch_at[TP0], 1000)))

    r._client = SimpleNamespace(
        send=send,
        cluster=SimpleNamespace(leader_for_partition=lambda tp: 1),
        force_metadata_update=lambda: None,
    )
    loop = asyncio.ensure_future(r._fetch_from(1))
    try:
        await asyncio.sleep(0.05)
        assert len(sent) == HELD_RECORDS // 1000
        await r.getmany(max_records=5000)
        await asyncio.sleep(0.05)
        assert len(sent) == HELD_RECORDS // 1000 + 5
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
