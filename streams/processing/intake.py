"""Turning a raw signal record into a validated signal, or into a dead letter with its reason.

Nothing here touches Kafka: the worker hands in the record's fields and gets back either an
:class:`AcceptedSignal` or a :class:`Rejection`, which :func:`dead_letter` turns into the message
for the dead-letter topic, keeping the original bytes.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import orjson
from aiokafka.partitioner import murmur2
from pydantic import ValidationError

from streams.messages import DID_RE, MAX_DID_LENGTH, Signal, iso_utc
from streams.scoring.model import DIMENSIONS

#: The earliest signal time accepted: 2000-01-01T00:00:00Z. Older stamps are a producer's bug (an
#: unset clock, seconds taken for milliseconds), and scoring them would open windows decades back.
EARLIEST_SIGNAL_MS = 946_684_800_000
#: How far beyond the future tolerance a stamp may be before it is refused rather than moved to
#: the current window: a clock a few hours off is a skewed host; a day off is a broken one.
FUTURE_REFUSAL_MS = 24 * 60 * 60 * 1000


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
    accepted = _accept_plain_signal(dimension_index, key, value, record_timestamp_ms)
    if accepted is not None:
        return accepted
    return _read_with_model(dimension_index, key, value, record_timestamp_ms)


def _read_with_model(
    dimension_index: int, key: bytes | None, value: bytes, record_timestamp_ms: int
) -> AcceptedSignal | Rejection:
    """Full validation with the :class:`Signal` model: the reference, and every rejection."""
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


#: ISO 8601 with seconds, optional fraction and an explicit zone: the form the SDK writes, and
#: one that datetime.fromisoformat and pydantic read the same way. Anything else goes to pydantic.
_PLAIN_TIMESTAMP = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?(?:Z|[+-][0-9]{2}:[0-9]{2})"
)
_TEXT_LIMITS = (("details", 8192), ("trace_id", 256), ("signal_id", 256))


def _accept_plain_signal(
    dimension_index: int, key: bytes | None, value: bytes, record_timestamp_ms: int
) -> AcceptedSignal | None:
    """The signal, if ``value`` is an ordinary valid one; None to let pydantic decide.

    Why: validating with the pydantic model costs more per signal than scoring it. This checks
    the common shape with plain comparisons and only ever accepts: every input it is unsure of
    (and every invalid one) gets the full validation, which also explains rejections. That it
    accepts nothing the model rejects, with the same values, is tested against the model itself.
    """
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if type(body) is not dict:
        return None
    did: Any = body.get("agent_did")
    number: Any = body.get("value")
    source: Any = body.get("source")
    if (
        type(did) is not str
        or len(did) > MAX_DID_LENGTH
        or DID_RE.fullmatch(did) is None
        or type(number) not in (float, int)
        or not 0 <= number <= 1
        or type(source) is not str
        or not 1 <= len(source) <= 256
        or not source.strip()
        or key is None
        or key != did.encode()
    ):
        return None
    dimension = body.get("dimension")
    if dimension is not None and dimension != DIMENSIONS[dimension_index].value:
        return None
    for name, limit in _TEXT_LIMITS:
        text = body.get(name)
        if text is not None and (type(text) is not str or len(text) > limit):
            return None
    timestamp = body.get("timestamp")
    if timestamp is None:
        timestamp_ms = record_timestamp_ms
    elif type(timestamp) is str and _PLAIN_TIMESTAMP.fullmatch(timestamp):
        try:
            timestamp_ms = round(datetime.fromisoformat(timestamp).timestamp() * 1000)
        except ValueError:
            return None
    else:
        return None
    return AcceptedSignal(did, float(number), timestamp_ms, body.get("signal_id"), source)


@dataclass(slots=True)
class SignalIntake:
    """The checks a signal record passes besides its content: where it was written and when it
    claims to be from. Holds a cache of each key's partition (murmur2 in Python costs about 3 us,
    as much as the rest of accepting an ordinary signal)."""

    max_bytes: int
    partitions: int
    #: A stamp up to this far ahead is moved to the current window (the window policy's grace).
    future_tolerance_ms: int
    _partition_of: dict[bytes, int] = field(default_factory=dict)

    def read(
        self,
        dimension_index: int,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        record_timestamp_ms: int,
        now_ms: int,
    ) -> AcceptedSignal | Rejection:
        signal = read_signal(dimension_index, key, value, record_timestamp_ms, self.max_bytes)
        if isinstance(signal, Rejection):
            return signal
        assert key is not None  # an accepted signal's key is its DID
        expected = self.partition_of(key)
        if partition != expected:
            return Rejection(
                "wrong_partition",
                f"written to partition {partition}, but agent {signal.agent_did!r} lives on "
                f"partition {expected} of {self.partitions} (murmur2 of the key, the Java "
                "client's default partitioner); producers on librdkafka must set "
                "partitioner=murmur2_random, Sarama producers a murmur2 partitioner",
            )
        stamp = signal.timestamp_ms
        if stamp < EARLIEST_SIGNAL_MS:
            return Rejection(
                "invalid_timestamp", f"timestamp {_shown_ms(stamp)} is before 2000-01-01"
            )
        if stamp > now_ms + self.future_tolerance_ms + FUTURE_REFUSAL_MS:
            return Rejection(
                "invalid_timestamp",
                f"timestamp {_shown_ms(stamp)} is more than a day ahead of the worker's clock "
                f"({iso_utc(now_ms)})",
            )
        return signal

    def partition_of(self, key: bytes) -> int:
        cached = self._partition_of.get(key)
        if cached is None:
            if len(self._partition_of) >= 200_000:
                self._partition_of.clear()  # a flood of fresh keys must not grow it without end
            cached = self._partition_of[key] = (murmur2(key) & 0x7FFFFFFF) % self.partitions
        return cached


def _shown_ms(epoch_ms: int) -> str:
    return f"{iso_utc(epoch_ms)} ({epoch_ms} ms)"


def _bounded(data: bytes | None, limit: int) -> dict[str, Any]:
    """A field of the original record as a dead letter keeps it: text when it is UTF-8, base64
    otherwise, cut so that what the dead letter holds (escaped, or base64) is at most ``limit``
    bytes, with the original's size and hash so that the whole can be matched to the record that
    was refused. Bounded by what is written, not by what is kept: escaping makes a control byte
    six bytes and base64 makes three four, and the dead letter must fit whatever was refused."""
    if data is None:
        return {"text": None, "encoding": None, "size": None, "sha256": None, "truncated": False}
    kept = data[:limit]
    while True:
        text, encoding = _as_text(kept, cut=len(kept) < len(data))
        written = len(orjson.dumps(text)) - 2 if encoding == "utf-8" else len(text)
        if written <= limit:
            break
        kept = kept[: max(0, len(kept) * limit // written - 4)]
    return {
        "text": text,
        "encoding": encoding,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "truncated": len(kept) < len(data),
    }


def _bounded_text(text: str, limit: int) -> str:
    """``text``, cut so that it is at most ``limit`` bytes once written as JSON."""
    text = text[:limit]
    written = len(orjson.dumps(text)) - 2
    while written > limit:
        text = text[: max(0, len(text) * limit // written - 4)]
        written = len(orjson.dumps(text)) - 2
    return text


def _as_text(kept: bytes, *, cut: bool) -> tuple[str, str]:
    try:
        return kept.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as exc:
        if cut and exc.start >= len(kept) - 3:
            # Only a character cut in two at the limit: keep the whole ones before it.
            return kept[: exc.start].decode("utf-8"), "utf-8"
        return base64.b64encode(kept).decode("ascii"), "base64"


#: Dead letters hold at most this much of a refused record's value by default (1 KiB of its key):
#: enough to see what a producer sent, small enough that a dead letter always fits in a record the
#: broker accepts, whatever was refused.
DEFAULT_KEPT_BYTES = 4096


def dead_letter(
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    record_timestamp_ms: int | None,
    rejection: Rejection,
    received_at_ms: int,
    kept_bytes: int = DEFAULT_KEPT_BYTES,
) -> bytes:
    kept_key = _bounded(key, min(kept_bytes, 1024))
    kept_value = _bounded(value, kept_bytes)
    return orjson.dumps(
        {
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "key": kept_key["text"],
            "key_encoding": kept_key["encoding"],
            "key_size": kept_key["size"],
            "key_sha256": kept_key["sha256"],
            "key_truncated": kept_key["truncated"],
            "timestamp": None if record_timestamp_ms is None else iso_utc(record_timestamp_ms),
            "value": kept_value["text"],
            "value_encoding": kept_value["encoding"],
            "value_size": kept_value["size"],
            "value_sha256": kept_value["sha256"],
            "value_truncated": kept_value["truncated"],
            # Bounded too, by what is written: a reason may quote the record (a key, a name).
            "error_kind": _bounded_text(rejection.kind, 64),
            "error": _bounded_text(rejection.message, 2048),
            "received_at": iso_utc(received_at_ms),
        }
    )
