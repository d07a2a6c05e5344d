"""The log reader's pure parts on real record batches: which records and batches it hands out,
where it reads on from, and how it answers each broker error, without a broker."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka.record.memory_records import MemoryRecords

from streams.kafka.logreader import (
    Batches,
    LogReadFailed,
    _Partition,
    _report_failing,
    _take,
    data_batches,
    records_of,
)
from tests.support.record_batches import (
    ABORT,
    COMMIT,
    batch,
    data_batch,
    marker,
)

TOPIC = "trust.changelog"
NO_ERROR, OFFSET_OUT_OF_RANGE, NOT_LEADER, TOPIC_AUTHORIZATION_FAILED = 0, 1, 6, 29


def parsed(*batches: bytes) -> list[Any]:
    """The batches as aiokafka reads them from a fetch answer."""
    records = MemoryRecords(b"".join(batches))
    found = []
    while (one := records.next_batch()) is not None:
        found.append(one)
    return found


def contents(chunk: Batches) -> list[tuple[int, bytes | None, bytes | None]]:
    return [(r.offset, r.key, r.value) for r in records_of(chunk)]


def base_offsets(batches: list[Any]) -> list[int]:
    return [b.base_offset for b in batches]


# --- records_of ---------------------------------------------------------------------------


def compacted_log() -> list[bytes]:
    """Offsets 0-4, 5-7, then (8 and 9 compacted away) 10, 11 (a tombstone) and 13."""
    return [
        data_batch(0, 5),
        data_batch(5, 3),
        batch(10, [(0, b"k10", b"v10"), (1, b"k11", None), (3, b"k13", b"v13")]),
    ]


def test_records_of_gives_the_records_from_start_to_end_across_batches() -> None:
    chunk = Batches(0, parsed(*compacted_log()), start=2, end=13, next_offset=13)
    assert contents(chunk) == [
        (2, b"k2", b"v2"),
        (3, b"k3", b"v3"),
        (4, b"k4", b"v4"),
        (5, b"k5", b"v5"),
        (6, b"k6", b"v6"),
        (7, b"k7", b"v7"),
        (10, b"k10", b"v10"),
        (11, b"k11", None),
    ]


def test_records_of_gives_whole_batches_whole() -> None:
    chunk = Batches(0, parsed(*compacted_log()), start=0, end=14, next_offset=14)
    assert [offset for offset, _, _ in contents(chunk)] == [0, 1, 2, 3, 4, 5, 6, 7, 10, 11, 13]
    assert contents(Batches(0, parsed(*compacted_log()), 5, 8, 8)) == [
        (5, b"k5", b"v5"),
        (6, b"k6", b"v6"),
        (7, b"k7", b"v7"),
    ]


def test_records_of_a_range_inside_one_batch() -> None:
    chunk = Batches(0, parsed(data_batch(100, 10)), start=103, end=105, next_offset=105)
    assert contents(chunk) == [(103, b"k103", b"v103"), (104, b"k104", b"v104")]


# --- data_batches -----------------------------------------------------------------------------


def test_batches_skip_those_before_the_position_and_crosses_compaction_gaps() -> None:
    answer = b"".join(compacted_log())
    kept, next_offset = data_batches(TOPIC, 0, MemoryRecords(answer), 5, [])
    assert base_offsets(kept) == [5, 10]
    assert next_offset == 14  # the last batch's next offset, not 5 + the 7 records read

    # A batch the position falls inside is kept (records_of drops its earlier records).
    kept, next_offset = data_batches(TOPIC, 0, MemoryRecords(answer), 6, [])
    assert base_offsets(kept) == [5, 10]
    assert next_offset == 14
    assert [r.offset for r in records_of(Batches(0, kept, 6, 14, 14))] == [6, 7, 10, 11, 13]


def test_batches_of_an_answer_wholly_before_the_position_move_nothing() -> None:
    kept, next_offset = data_batches(TOPIC, 0, MemoryRecords(b"".join(compacted_log())), 14, [])
    assert kept == []
    assert next_offset == 14
    assert data_batches(TOPIC, 0, MemoryRecords(b""), 7, []) == ([], 7)


def transactions() -> list[bytes]:
    """Producer 7 commits 0-1, aborts 3-4 and 7 (producer 8's 5-6 in between), commits 9-10."""
    return [
        data_batch(0, 2, producer_id=7, transactional=True),
        marker(2, 7, COMMIT),
        data_batch(3, 2, producer_id=7, transactional=True),
        data_batch(5, 2, producer_id=8, transactional=True),
        data_batch(7, 1, producer_id=7, transactional=True),
        marker(8, 7, ABORT),
        data_batch(9, 2, producer_id=7, transactional=True),
        marker(11, 7, COMMIT),
    ]


def test_batches_leave_out_aborted_transactions_and_control_batches() -> None:
    kept, next_offset = data_batches(TOPIC, 0, MemoryRecords(b"".join(transactions())), 0, [(7, 3)])
    assert base_offsets(kept) == [0, 5, 9]
    assert [b.producer_id for b in kept] == [7, 8, 7]
    assert next_offset == 12  # the last batch is a control batch: the offset moves past it
    assert [r.offset for r in records_of(Batches(0, kept, 0, 12, 12))] == [0, 1, 5, 6, 9, 10]


def test_batches_leave_out_a_transaction_aborted_before_the_position() -> None:
    kept, next_offset = data_batches(TOPIC, 0, MemoryRecords(b"".join(transactions())), 7, [(7, 3)])
    assert base_offsets(kept) == [9]
    assert next_offset == 12


def test_batches_keep_every_transaction_when_none_was_aborted() -> None:
    kept, next_offset = data_batches(TOPIC, 0, MemoryRecords(b"".join(transactions())), 0, [])
    assert base_offsets(kept) == [0, 3, 5, 7, 9]
    assert next_offset == 12


def test_batches_of_an_answer_of_control_batches_only_move_the_offset() -> None:
    answer = marker(20, 7, ABORT) + marker(21, 8, COMMIT)
    assert data_batches(TOPIC, 0, MemoryRecords(answer), 20, []) == ([], 22)


def test_a_batch_altered_after_it_was_written_fails_the_read() -> None:
    good = data_batch(30, 10)
    corrupt = bytearray(data_batch(40, 3))
    corrupt[-3] ^= 0x01  # inside the last record's value
    assert parsed(bytes(corrupt))[0].validate_crc() is False
    with pytest.raises(LogReadFailed, match=r"trust\.changelog\[3\].*offset 40.*CRC"):
        data_batches(TOPIC, 3, MemoryRecords(good + bytes(corrupt)), 30, [])


# --- _take --------------------------------------------------------------------------------


@dataclass
class Response:
    """A Fetch answer of version 11, as aiokafka decodes it."""

    topics: list[tuple[str, list[tuple[Any, ...]]]]
    API_VERSION: int = 11


def answer(
    partition: int,
    records: bytes = b"",
    *,
    error_code: int = NO_ERROR,
    highwater: int = -1,
    last_stable_offset: int = -1,
    log_start_offset: int = 0,
    aborted: list[tuple[int, int]] | None = None,
) -> tuple[Any, ...]:
    return (
        partition,
        error_code,
        highwater,
        last_stable_offset,
        log_start_offset,
        aborted,
        -1,
        records,
    )


def response(*answers: tuple[Any, ...]) -> Response:
    return Response([(TOPIC, list(answers))])


@dataclass
class Client:
    metadata_updates: int = 0

    def force_metadata_update(self) -> None:
        self.metadata_updates += 1


def test_take_reads_to_the_last_stable_offset_of_the_first_answer() -> None:
    client = Client()
    pending = {0: _Partition(0, 0), 1: _Partition(1, 0)}
    first = response(
        answer(0, data_batch(0, 3), highwater=9, last_stable_offset=5),
        answer(1, data_batch(0, 2), highwater=2, last_stable_offset=2),
    )
    ready = _take(client, TOPIC, first, {0: 0, 1: 0}, pending)

    assert [(c.partition, c.start, c.end, c.next_offset) for c in ready] == [
        (0, 0, 5, 3),
        (1, 0, 2, 2),
    ]
    assert [r.offset for r in records_of(ready[0])] == [0, 1, 2]
    assert list(pending) == [0]  # partition 1 reached its end
    assert (pending[0].position, pending[0].end) == (3, 5)

    # A later answer reports a later stable offset: the end stays where the read began.
    second = response(answer(0, data_batch(3, 4), highwater=12, last_stable_offset=12))
    ready = _take(client, TOPIC, second, {0: 3}, pending)
    assert [(c.partition, c.start, c.end, c.next_offset) for c in ready] == [(0, 3, 5, 5)]
    assert contents(ready[0]) == [(3, b"k3", b"v3"), (4, b"k4", b"v4")]
    assert pending == {}
    assert client.metadata_updates == 0


def test_take_ends_a_partition_whose_end_is_a_compaction_gap_or_aborted_records() -> None:
    pending = {2: _Partition(2, 0)}
    records = data_batch(0, 2, producer_id=7, transactional=True) + marker(2, 7, ABORT)
    first = response(answer(2, records, highwater=3, last_stable_offset=3, aborted=[(7, 0)]))
    ready = _take(Client(), TOPIC, first, {2: 0}, pending)
    assert [(c.partition, c.batches, c.start, c.end, c.next_offset) for c in ready] == [
        (2, [], 0, 3, 3)
    ]
    assert pending == {}


def test_take_of_a_partition_already_at_its_end_hands_out_nothing() -> None:
    pending = {0: _Partition(0, 8)}
    ready = _take(
        Client(), TOPIC, response(answer(0, highwater=8, last_stable_offset=8)), {0: 8}, pending
    )
    assert ready == []
    assert pending == {}


def test_take_reads_on_from_the_log_start_when_the_position_was_deleted() -> None:
    pending = {0: _Partition(0, 10)}
    stale = response(answer(0, error_code=OFFSET_OUT_OF_RANGE, log_start_offset=25))
    assert _take(Client(), TOPIC, stale, {0: 10}, pending) == []
    assert pending[0].position == 25
    assert pending[0].end is None
    assert pending[0].failing_since is None


def test_take_refuses_a_position_beyond_the_log() -> None:
    pending = {0: _Partition(0, 40)}
    beyond = response(answer(0, error_code=OFFSET_OUT_OF_RANGE, log_start_offset=25))
    with pytest.raises(LogReadFailed, match=r"offset 40: OffsetOutOfRangeError"):
        _take(Client(), TOPIC, beyond, {0: 40}, pending)


def test_take_retries_a_partition_whose_leader_moved() -> None:
    client = Client()
    pending = {0: _Partition(0, 4)}
    before = time.monotonic()
    moved = response(answer(0, error_code=NOT_LEADER))
    assert _take(client, TOPIC, moved, {0: 4}, pending) == []
    part = pending[0]
    assert part.position == 4
    assert part.failing_since is not None and part.failing_since >= before
    assert part.last_error == "NotLeaderForPartitionError"
    assert client.metadata_updates == 1

    # Still failing: the first failure's time is kept.
    since = part.failing_since
    assert _take(client, TOPIC, moved, {0: 4}, pending) == []
    assert part.failing_since == since
    assert client.metadata_updates == 2

    # The new leader answers: the partition is no longer failing.
    led = response(answer(0, data_batch(4, 2), highwater=10, last_stable_offset=10))
    ready = _take(client, TOPIC, led, {0: 4}, pending)
    assert [r.offset for r in records_of(ready[0])] == [4, 5]
    assert pending[0].failing_since is None
    assert pending[0].position == 6


def test_take_fails_on_an_error_that_does_not_pass() -> None:
    client = Client()
    pending = {0: _Partition(0, 4)}
    refused = response(answer(0, error_code=TOPIC_AUTHORIZATION_FAILED))
    with pytest.raises(
        LogReadFailed,
        match=r"trust\.changelog\[0\] cannot be read from offset 4: TopicAuthorizationFailedError",
    ):
        _take(client, TOPIC, refused, {0: 4}, pending)
    assert client.metadata_updates == 0


def test_take_ignores_an_answer_to_an_older_position_or_an_unasked_partition() -> None:
    client = Client()
    pending = {0: _Partition(0, 6)}
    late = response(
        answer(0, data_batch(3, 3), highwater=10, last_stable_offset=10),
        answer(5, data_batch(0, 1), highwater=1, last_stable_offset=1),
    )
    assert _take(client, TOPIC, late, {0: 3, 5: 0}, pending) == []
    assert (pending[0].position, pending[0].end) == (6, None)
    assert list(pending) == [0]

    # Even an error in such an answer is not the partition's any more.
    refused = response(answer(0, error_code=TOPIC_AUTHORIZATION_FAILED))
    assert _take(client, TOPIC, refused, {0: 3}, pending) == []
    moved = response(answer(0, error_code=NOT_LEADER))
    assert _take(client, TOPIC, moved, {0: 3}, pending) == []
    assert pending[0].failing_since is None
    assert client.metadata_updates == 0


# --- _check_failing -----------------------------------------------------------------------


def test_a_partition_that_cannot_be_read_is_reported_every_half_minute_never_given_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = time.monotonic()
    pending = {
        0: _Partition(0, 0),
        1: _Partition(1, 0, failing_since=now - 10, last_error="NotLeaderForPartitionError"),
    }
    _report_failing(TOPIC, pending)  # failing, but not for long
    assert caplog.records == []

    pending[1].failing_since = now - 61
    _report_failing(TOPIC, pending)
    assert len(caplog.records) == 1
    assert re.search(
        r"trust\.changelog\[1\] has not been readable for 6\d s "
        r"\(last: NotLeaderForPartitionError\); retrying",
        caplog.records[0].getMessage(),
    )
    _report_failing(TOPIC, pending)  # reported just now: not again yet
    assert len(caplog.records) == 1
    pending[1].reported_at = now - 31
    _report_failing(TOPIC, pending)
    assert len(caplog.records) == 2
    assert set(pending) == {0, 1}  # never given up
