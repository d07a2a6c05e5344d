"""Turning a raw signal record into a validated signal, or into a dead letter with its reason.

Nothing here touches Kafka: the worker hands in the record's fields and gets back either an
:class:`AcceptedSignal` or a :class:`Rejection`, which :func:`dead_letter` turns into the message
for the dead-letter topic, keeping the original bytes.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import NamedTuple

import orjson
from pydantic import ValidationError

from .messages import Signal, iso_utc
from .scoring.model import DIMENSIONS


class AcceptedSignal(NamedTuple):
    """A valid signal (a tuple: one is built per signal, and tuples are the cheapest to build)."""

    agent_did: str
    value: float
    timestamp_ms: int
    signal_id: str | None
    source: str


@dataclass(frozen=True, slots=True)
class Rejection:
    kind: str
    message: str


def _first_error(exc: ValidationError) -> Rejection:
    errors = exc.errors(include_url=False)
    first = errors[0]
    if first["type"] == "json_invalid":
        return Rejection("invalid_json", f"value is not valid JSON: {first['msg']}")
    if first["type"] in {"model_type", "model_attributes_type"}:
        return Rejection("not_an_object", "value is not a JSON object")
    described = "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in errors[:5]
    )
    missing = any(err["type"] == "missing" for err in errors)
    return Rejection("missing_field" if missing else "invalid_field", described)


def read_signal(
    dimension_index: int,
    key: bytes | None,
    value: bytes | None,
    record_timestamp_ms: int,
    max_bytes: int,
) -> AcceptedSignal | Rejection:
    """Validate one record from the signal topic of ``DIMENSIONS[dimension_index]``."""
    if value is None:
        return Rejection("empty_value", "record has no value (a tombstone is not a signal)")
    if len(value) > max_bytes:
        return Rejection("too_large", f"value is {len(value)} bytes, the limit is {max_bytes}")
    try:
        signal = Signal.model_validate_json(value)
    except ValidationError as exc:
        return _first_error(exc)
    expected = DIMENSIONS[dimension_index]
    if signal.dimension is not None and signal.dimension != expected:
        return Rejection(
            "dimension_mismatch",
            f"dimension {signal.dimension.value!r} does not match the topic's {expected.value!r}",
        )
    if key is None:
        return Rejection("missing_key", "record has no key; key it by the agent's DID (UTF-8)")
    if key != signal.agent_did.encode():
        shown = key.decode("utf-8", errors="backslashreplace")
        return Rejection(
            "key_mismatch", f"record key {shown!r} differs from agent_did {signal.agent_did!r}"
        )
    timestamp_ms = (
        round(signal.timestamp.timestamp() * 1000)
        if signal.timestamp is not None
        else record_timestamp_ms
    )
    return AcceptedSignal(
        signal.agent_did, float(signal.value), timestamp_ms, signal.signal_id, signal.source
    )


def _text_or_base64(data: bytes | None) -> tuple[str | None, str | None]:
    if data is None:
        return None, None
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), "base64"


def dead_letter(
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    record_timestamp_ms: int | None,
    rejection: Rejection,
    received_at_ms: int,
) -> bytes:
    key_text, key_encoding = _text_or_base64(key)
    value_text, value_encoding = _text_or_base64(value)
    return orjson.dumps(
        {
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "key": key_text,
            "key_encoding": key_encoding,
            "timestamp": None if record_timestamp_ms is None else iso_utc(record_timestamp_ms),
            "value": value_text,
            "value_encoding": value_encoding,
            "error_kind": rejection.kind,
            "error": rejection.message,
            "received_at": iso_utc(received_at_ms),
        }
    )
