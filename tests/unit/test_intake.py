"""Signal intake (streams/processing/intake.py): what is accepted, what is dead-lettered, and
why."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.messages import DeadLetter
from streams.processing.intake import AcceptedSignal, Rejection, dead_letter, read_signal
from streams.scoring.model import DIMENSIONS

DID = "did:mesh:agent-42"
KEY = DID.encode()
RECORD_MS = 1_718_000_000_123
MAX_BYTES = 4096
GOOD: dict[str, Any] = {"agent_did": DID, "value": 0.5, "source": "policy_engine"}


def read(
    payload: dict[str, Any] | bytes | None,
    *,
    key: bytes | None = KEY,
    dimension: int = 0,
    max_bytes: int = MAX_BYTES,
) -> AcceptedSignal | Rejection:
    value = json.dumps(payload).encode() if isinstance(payload, dict) else payload
    return read_signal(dimension, key, value, RECORD_MS, max_bytes)


def with_(**changes: Any) -> dict[str, Any]:
    return {**GOOD, **changes}


def without(field: str) -> dict[str, Any]:
    return {k: v for k, v in GOOD.items() if k != field}


def rejected_as(result: AcceptedSignal | Rejection, kind: str) -> None:
    assert isinstance(result, Rejection), f"accepted: {result}"
    assert result.kind == kind, result
    assert result.message


# --------------------------------------------------------------------------------- accepted


def test_good_signal_without_timestamp_takes_the_record_timestamp() -> None:
    assert read(GOOD) == AcceptedSignal(DID, 0.5, RECORD_MS, None, "policy_engine")


def test_good_signal_with_timestamp_uses_it() -> None:
    result = read(with_(timestamp="2024-06-10T06:13:20.456Z", signal_id="sig-1"))
    expected_ms = round(datetime(2024, 6, 10, 6, 13, 20, 456000, tzinfo=UTC).timestamp() * 1000)
    assert result == AcceptedSignal(DID, 0.5, expected_ms, "sig-1", "policy_engine")


def test_timestamp_with_an_offset_means_the_same_instant() -> None:
    utc = read(with_(timestamp="2024-06-10T06:00:00Z"))
    offset = read(with_(timestamp="2024-06-10T08:00:00+02:00"))
    assert isinstance(utc, AcceptedSignal) and isinstance(offset, AcceptedSignal)
    assert offset.timestamp_ms == utc.timestamp_ms


@pytest.mark.parametrize("index", range(5))
def test_dimension_field_naming_the_topics_dimension_is_accepted(index: int) -> None:
    result = read(with_(dimension=DIMENSIONS[index].value), dimension=index)
    assert isinstance(result, AcceptedSignal)
    assert isinstance(read(with_(dimension=None), dimension=index), AcceptedSignal)


@pytest.mark.parametrize("value", [0, 1, 0.0, 1.0, 0.3, 0.29999, 5e-324])
def test_values_across_the_closed_unit_interval_are_accepted(value: float) -> None:
    result = read(with_(value=value))
    assert isinstance(result, AcceptedSignal)
    assert result.value == value and type(result.value) is float


@pytest.mark.parametrize(
    "did",
    [
        "did:mesh:agent-42",
        "did:web:example.com%3A8443",
        "did:mesh:a:b:c",
        "did:key:z6Mk_x.y-z",
        "did:m2:X",
    ],
)
def test_valid_dids_are_accepted(did: str) -> None:
    result = read(with_(agent_did=did), key=did.encode())
    assert isinstance(result, AcceptedSignal) and result.agent_did == did


def test_optional_fields_are_accepted() -> None:
    result = read(
        with_(details="ok", trace_id="t-1", signal_id="s-9", dimension="policy_compliance")
    )
    assert isinstance(result, AcceptedSignal) and result.signal_id == "s-9"


def test_value_of_exactly_the_size_limit_is_accepted() -> None:
    raw = json.dumps(GOOD).encode()
    assert isinstance(read(raw, max_bytes=len(raw)), AcceptedSignal)


# --------------------------------------------------------------------------------- rejected


@pytest.mark.parametrize("raw", [b"not json", b"{", b"", b"\xff\xfe", b"{'value': 0.5}"])
def test_not_json(raw: bytes) -> None:
    rejected_as(read(raw), "invalid_json")


@pytest.mark.parametrize(
    "raw", [b"[]", b'[{"value": 0.5}]', b"0.5", b"42", b'"did:mesh:x"', b"null", b"true"]
)
def test_json_that_is_not_an_object(raw: bytes) -> None:
    rejected_as(read(raw), "not_an_object")


@pytest.mark.parametrize("field", ["agent_did", "value", "source"])
def test_missing_required_field(field: str) -> None:
    rejected_as(read(without(field)), "missing_field")


def test_empty_object_is_missing_fields() -> None:
    rejected_as(read(b"{}"), "missing_field")


@pytest.mark.parametrize(
    "changes",
    [
        {"value": "0.5"},  # a string is not a number
        {"value": True},  # nor is a boolean
        {"value": None},
        {"value": [0.5]},
        {"value": -0.1},
        {"value": 1.5},
        {"value": 1.0000001},
        {"source": ""},
        {"source": 7},
        {"agent_did": 42},
        {"dimension": "tone_of_voice"},
        {"signal_id": 12},
    ],
)
def test_wrong_type_or_range(changes: dict[str, Any]) -> None:
    rejected_as(read(with_(**changes)), "invalid_field")


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
def test_non_finite_values(literal: bytes) -> None:
    raw = b'{"agent_did": "%s", "value": %s, "source": "s"}' % (KEY, literal)
    rejected_as(read(raw), "invalid_field")


@pytest.mark.parametrize(
    "did",
    [
        "did:",
        "did:mesh:",
        "did::x",
        "agent-1",
        "did:Mesh:x",  # the method name is lower case
        "did:mesh:x:",  # trailing colon
        "DID:mesh:x",
        "did:mesh:a b",
        "did:mesh:a%2",  # broken percent-encoding
        "did:mesh:x\n",
        "did:me-sh:x",
        "did:mesh:" + "a" * 600,  # longer than the 512 the wire contract allows
    ],
)
def test_invalid_dids(did: str) -> None:
    rejected_as(read(with_(agent_did=did), key=did.encode()), "invalid_field")


@pytest.mark.parametrize(
    "timestamp", ["2024-06-10T06:13:20", "2024-06-10 06:13:20", "yesterday", "2024-13-01T00:00:00Z"]
)
def test_timestamps_without_zone_or_unreadable_are_rejected(timestamp: str) -> None:
    rejected_as(read(with_(timestamp=timestamp)), "invalid_field")


def test_dimension_mismatch() -> None:
    rejected_as(read(with_(dimension="security_posture"), dimension=0), "dimension_mismatch")


@pytest.mark.parametrize(
    "key", [b"did:mesh:agent-43", b"did:mesh:Agent-42", KEY + b" ", b"\xff\xfe"]
)
def test_key_mismatch(key: bytes) -> None:
    rejected_as(read(GOOD, key=key), "key_mismatch")


def test_missing_key() -> None:
    rejected_as(read(GOOD, key=None), "missing_key")


def test_over_size_value() -> None:
    raw = json.dumps(with_(details="x" * 5000)).encode()
    rejected_as(read(raw), "too_large")
    rejected_as(read(json.dumps(GOOD).encode(), max_bytes=10), "too_large")


def test_tombstone() -> None:
    rejected_as(read(None), "empty_value")


# ------------------------------------------------------------------------------ dead letters


def letter(
    key: bytes | None,
    value: bytes | None,
    record_ms: int | None = RECORD_MS,
    received_ms: int = RECORD_MS + 5,
) -> DeadLetter:
    rejection = Rejection("invalid_json", "value is not valid JSON")
    raw = dead_letter(
        "trust.signals.policy", 3, 1234, key, value, record_ms, rejection, received_ms
    )
    return DeadLetter.model_validate_json(raw)


def test_dead_letter_keeps_utf8_key_and_value_as_text() -> None:
    dl = letter(KEY, b'{"value": "\xc3\xa9"')
    assert (dl.topic, dl.partition, dl.offset) == ("trust.signals.policy", 3, 1234)
    assert (dl.key, dl.key_encoding) == (DID, "utf-8")
    assert (dl.value, dl.value_encoding) == ('{"value": "\u00e9"', "utf-8")
    assert (dl.error_kind, dl.error) == ("invalid_json", "value is not valid JSON")
    assert dl.timestamp == datetime.fromtimestamp(RECORD_MS / 1000, tz=UTC)
    assert dl.received_at == datetime.fromtimestamp((RECORD_MS + 5) / 1000, tz=UTC)


def test_dead_letter_base64_encodes_bytes_that_are_not_utf8() -> None:
    dl = letter(b"\xff\x00key", b"\x80\x81\x82")
    assert dl.key_encoding == "base64" and base64.b64decode(dl.key) == b"\xff\x00key"
    assert dl.value_encoding == "base64" and base64.b64decode(dl.value) == b"\x80\x81\x82"


def test_dead_letter_of_a_keyless_tombstone() -> None:
    dl = letter(None, None, record_ms=None)
    assert (dl.key, dl.key_encoding, dl.value, dl.value_encoding) == (None, None, None, None)
    assert dl.timestamp is None


@settings(max_examples=200, deadline=None)
@given(
    key=st.one_of(st.none(), st.binary(max_size=64)),
    value=st.one_of(st.none(), st.binary(max_size=256), st.text(max_size=64).map(str.encode)),
    record_ms=st.integers(0, 4_102_444_800_000),
)
def test_dead_letter_always_validates_and_keeps_the_original_bytes(
    key: bytes | None, value: bytes | None, record_ms: int
) -> None:
    dl = letter(key, value, record_ms)
    for original, text, encoding in (
        (key, dl.key, dl.key_encoding),
        (value, dl.value, dl.value_encoding),
    ):
        if original is None:
            assert (text, encoding) == (None, None)
        elif encoding == "utf-8":
            assert text.encode("utf-8") == original
        else:
            assert encoding == "base64" and base64.b64decode(text) == original
    assert dl.timestamp is not None
    assert round(dl.timestamp.timestamp() * 1000) == record_ms


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=200))
def test_any_bytes_are_either_accepted_or_rejected_never_raise(raw: bytes) -> None:
    result = read_signal(1, KEY, raw, RECORD_MS, MAX_BYTES)
    assert isinstance(result, AcceptedSignal | Rejection)
