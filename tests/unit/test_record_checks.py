"""The checks a record passes besides its content: partition, time range, bounded dead letters,
ticks near the worker's clock, commands on their agent's partition, times that always format."""

from __future__ import annotations

import base64
import hashlib

import orjson
import pytest

from streams.messages import DeadLetter, iso_utc, read_command
from streams.processing.closing import decode_tick, tick_refusal
from streams.processing.intake import (
    EARLIEST_SIGNAL_MS,
    AcceptedSignal,
    Rejection,
    SignalIntake,
    dead_letter,
)
from streams.sdk import partition_for

NOW_MS = 1_795_000_000_000
PARTITIONS = 6
DID = "did:mesh:agent-42"
HOME = partition_for(DID, PARTITIONS)


def intake() -> SignalIntake:
    return SignalIntake(max_bytes=65536, partitions=PARTITIONS, future_tolerance_ms=5000)


def signal(**fields: object) -> bytes:
    return orjson.dumps({"agent_did": DID, "value": 0.5, "source": "test", **fields})


def test_a_signal_on_its_agents_partition_is_accepted() -> None:
    result = intake().read(0, HOME, DID.encode(), signal(), NOW_MS, NOW_MS)
    assert isinstance(result, AcceptedSignal) and result.timestamp_ms == NOW_MS


def test_a_signal_on_another_partition_is_refused_naming_the_partitioner() -> None:
    other = (HOME + 1) % PARTITIONS
    result = intake().read(0, other, DID.encode(), signal(), NOW_MS, NOW_MS)
    assert isinstance(result, Rejection) and result.kind == "wrong_partition"
    assert f"partition {HOME}" in result.message and "murmur2_random" in result.message


def test_partition_agrees_with_the_sdk_for_many_keys() -> None:
    checker = intake()
    for i in range(500):
        did = f"did:mesh:agent-{i}"
        assert checker.partition_of(did.encode()) == partition_for(did, PARTITIONS)


@pytest.mark.parametrize(
    ("stamp", "accepted"),
    [
        ("1999-12-31T23:59:59Z", False),
        ("2000-01-01T00:00:00Z", True),
        ("0001-01-01T00:00:00Z", False),
        ("9999-12-31T23:59:59Z", False),
    ],
)
def test_signal_timestamps_outside_a_sane_range_are_refused(stamp: str, accepted: bool) -> None:
    result = intake().read(0, HOME, DID.encode(), signal(timestamp=stamp), NOW_MS, NOW_MS)
    if accepted:
        assert isinstance(result, AcceptedSignal)
    else:
        assert isinstance(result, Rejection) and result.kind == "invalid_timestamp", result


def test_a_day_beyond_the_future_tolerance_is_the_limit() -> None:
    day = 24 * 3600 * 1000
    checker = intake()
    limit = NOW_MS + 5000 + day
    ok = checker.read(0, HOME, DID.encode(), signal(), limit, NOW_MS)
    refused = checker.read(0, HOME, DID.encode(), signal(), limit + 1, NOW_MS)
    assert isinstance(ok, AcceptedSignal)
    assert isinstance(refused, Rejection) and refused.kind == "invalid_timestamp"
    # A record timestamp of -1 (no timestamp) is before 2000 too.
    missing = checker.read(0, HOME, DID.encode(), signal(), -1, NOW_MS)
    assert isinstance(missing, Rejection) and missing.kind == "invalid_timestamp"
    assert EARLIEST_SIGNAL_MS == 946_684_800_000


@pytest.mark.parametrize(
    "value",
    [b"\x01" * 170_000, bytes(range(256)) * 4000, "é".encode() * 600_000, b"x" * 1_000_000],
)
def test_a_dead_letter_keeps_a_bounded_prefix_with_size_and_hash(value: bytes) -> None:
    key = b"\xff" * 50_000
    raw = dead_letter("t", 0, 7, key, value, NOW_MS, Rejection("too_large", "x" * 10_000), NOW_MS)
    # What is written of the key (1 KiB) and the value (4 KiB), escaped or base64, plus the fixed
    # fields and the bounded reason.
    assert len(raw) < 1024 + 4096 + 4096
    letter = DeadLetter.model_validate_json(raw)
    assert letter.value_size == len(value) and letter.value_truncated
    assert letter.value_sha256 == hashlib.sha256(value).hexdigest()
    assert letter.key_size == len(key) and letter.key_truncated
    assert letter.value is not None
    kept = (
        letter.value.encode()
        if letter.value_encoding == "utf-8"
        else base64.b64decode(letter.value)
    )
    assert value.startswith(kept) and 0 < len(kept) <= 4096
    assert len(letter.value) <= 4096 and letter.key is not None and len(letter.key) <= 1024


def test_a_small_value_is_kept_whole() -> None:
    raw = dead_letter("t", 0, 1, None, b"not json", NOW_MS, Rejection("invalid_json", "e"), NOW_MS)
    letter = DeadLetter.model_validate_json(raw)
    assert letter.value == "not json" and not letter.value_truncated
    assert letter.key is None and letter.key_size is None and not letter.key_truncated


@pytest.mark.parametrize(
    ("raw", "refused"),
    [
        (orjson.dumps({"t": NOW_MS}), False),
        (orjson.dumps({"t": NOW_MS + 59_000}), False),
        (orjson.dumps({"t": NOW_MS + 61_000}), True),
        (orjson.dumps({"t": 253_402_300_800_000}), True),
        (orjson.dumps({"t": NOW_MS - 3_600_000}), True),
        (b'{"t": 1180591620717411303424}', True),
        (orjson.dumps({"t": 1.5e12}), True),
        (orjson.dumps({"t": True}), True),
        (orjson.dumps({"t": str(NOW_MS)}), True),
        (b"[" * 100_000, True),
        (b"", True),
        (None, True),
        (b"\xff\xfe", True),
    ],
)
def test_only_ticks_near_the_workers_clock_move_it(raw: bytes | None, refused: bool) -> None:
    reason = tick_refusal(decode_tick(raw), NOW_MS, 60_000)
    assert (reason is not None) == refused


def test_commands_are_read_only_on_their_agents_partition() -> None:
    body = orjson.dumps({"agent_did": DID, "requested_by": "ops", "reason": "appeal upheld"})
    checker = intake()
    command = read_command(body, HOME, checker.partition_of)
    assert not isinstance(command, str) and command.agent_did == DID
    elsewhere = read_command(body, (HOME + 1) % PARTITIONS, checker.partition_of)
    assert isinstance(elsewhere, str) and "lives on partition" in elsewhere
    for bad in (None, b"", b"[]", b"\x00\xff", b"{" * 50_000, orjson.dumps({"agent_did": 5})):
        assert isinstance(read_command(bad, HOME, checker.partition_of), str)


@pytest.mark.parametrize("epoch_ms", [0, -1, 2**62, -(2**62), 253_402_300_800_000, NOW_MS])
def test_any_stored_time_formats(epoch_ms: int) -> None:
    text = iso_utc(epoch_ms)
    assert text.endswith("Z") and len(text) == 24
