"""Fuzzing the record layer: whatever a record on any topic the worker reads holds (its key, value
and timestamp), each decoder returns rather than raises, and every record is either taken or
refused with a reason. What is taken keeps the promises the rest of the worker relies on; what is
refused becomes a dead letter that validates and stays bounded.

Structured strategies build records close to valid ones (one to three fields mutated: wrong types,
NaN and infinities as text, huge numbers, nested objects, unicode, surrogates, duplicate members,
timestamps of every shape and range, keys that match, differ or are not UTF-8), so both the
signal fast path and the pydantic model are exercised, not only the JSON parser; random bytes
cover the rest. ``pytest --hypothesis-show-statistics`` shows how the outcomes were spread.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import string
import tempfile
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, Phase, event, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from streams.kafka.topics import TopicNames
from streams.messages import (
    DID_RE,
    MAX_DID_LENGTH,
    DeadLetter,
    ReinstateCommand,
    ReinstatementEvent,
    RevocationEvent,
    ScoreUpdate,
    Signal,
    read_command,
)
from streams.processing.closing import decode_tick, tick_refusal
from streams.processing.config_topic import (
    CONFIG_KEY,
    ConfigFollower,
    config_from_record,
    encode_update,
)
from streams.processing.intake import (
    EARLIEST_SIGNAL_MS,
    FUTURE_REFUSAL_MS,
    AcceptedSignal,
    Rejection,
    SignalIntake,
    _accept_plain_signal,
    dead_letter,
)
from streams.processing.outputs import (
    reinstatement_message,
    revocation_message,
    score_update_message,
)
from streams.processing.pipeline import ScoringPipeline
from streams.scoring.agent import (
    AgentState,
    Revocation,
    SignalTrigger,
    WindowTrigger,
    apply_reinstatement,
    apply_signal,
    close_windows,
)
from streams.scoring.codec import StateFormatError, decode_state, encode_state
from streams.scoring.formulas import total_score
from streams.scoring.model import (
    DEFAULT_WEIGHTS,
    DIMENSIONS,
    DimensionFloor,
    InvalidScoringConfig,
    ScoringConfig,
)
from streams.scoring.windows import WindowPolicy
from streams.sdk import partition_for
from tests.support.fake_kafka import FakeEvent, FakeMessage, FakeProducer
from tests.support.unit_pipeline import unit_pipeline

NOW_MS = 1_795_000_000_000
DAY_MS = 24 * 60 * 60 * 1000
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
#: Every error kind a dead letter may carry: the list its model documents.
KNOWN_KINDS = frozenset(
    kind.strip() for kind in (DeadLetter.model_fields["error_kind"].description or "").split(",")
)
DEFAULT_CONFIG = ScoringConfig.validated(DEFAULT_WEIGHTS)
NAMES = TopicNames("fuzz.")
WINDOWS = WindowPolicy(size_ms=30_000, grace_ms=5_000)

# Thousands of examples per decoder: each costs well under a millisecond to check, most of the
# time goes to generating it. Random (not derandomized): every run tries new inputs.
MANY = settings(
    max_examples=3000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# ---------------------------------------------------------------------------- writing JSON


@dataclass(frozen=True)
class Raw:
    """JSON text written as it is: what json.dumps cannot write (1e400, lone surrogate escapes,
    leading zeros, truncated documents)."""

    text: str


@dataclass(frozen=True)
class Pairs:
    """A JSON object written with these members in this order, duplicate names included."""

    items: tuple[tuple[str, Any], ...]


def to_json(node: Any, ascii_only: bool) -> str:
    if isinstance(node, Raw):
        return node.text
    if isinstance(node, Pairs | dict):
        items = node.items if isinstance(node, Pairs) else tuple(node.items())
        return (
            "{"
            + ",".join(
                f"{json.dumps(name, ensure_ascii=ascii_only)}:{to_json(value, ascii_only)}"
                for name, value in items
            )
            + "}"
        )
    if isinstance(node, list | tuple):
        return "[" + ",".join(to_json(item, ascii_only) for item in node) + "]"
    # Big integers as digits, NaN and infinities as the non-JSON words most encoders write.
    return json.dumps(node, ensure_ascii=ascii_only)


def to_bytes(node: Any, ascii_only: bool) -> bytes:
    # Without ASCII escapes a lone surrogate becomes the bytes CESU-8 would write: not UTF-8.
    return to_json(node, ascii_only).encode("utf-8", "surrogatepass")


# ---------------------------------------------------------------------------- strategies

#: Any code point, surrogates and controls included.
any_text = st.text(st.characters(exclude_categories=()), max_size=24)
ODD_JSON = [
    "NaN",
    "-NaN",
    "Infinity",
    "-Infinity",
    "1e400",
    "-1e400",
    "1e-400",
    "-0",
    "-0.0",
    "0.5e",
    "01",
    "0x1",
    ".5",
    "+1",
    "1.",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775809",
    "1" + "0" * 400,
    "0." + "0" * 400 + "1",
    '"\\ud800"',
    '"\\udc00x"',
    '"\\ud83d\\ude00"',
    '"\\u0000"',
    '"\\uZZZZ"',
    '"unterminated',
    "[" * 300 + "]" * 300,
    '{"a":' * 300 + "1" + "}" * 300,
    "[",
    "{",
    "true",
    "nul",
    "",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(INT64_MIN - 2, INT64_MAX + 2),
    st.floats(),
    any_text,
    # By index: a strategy's description (shown in statistics) would quote every text.
    st.integers(0, len(ODD_JSON) - 1).map(lambda i: Raw(ODD_JSON[i])),
)
oddities = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(any_text, scalars, max_size=2),
    st.sampled_from([[], {}, [[0.5]], {"value": {"value": 0.5}}, [None, [None]], {"": []}]),
)
#: JSON documents of any shape, two levels deep (st.recursive retries too often to be cheap).
_json_leaves = st.none() | st.booleans() | st.integers() | st.floats() | any_text
_json_nodes = _json_leaves | st.lists(_json_leaves, max_size=4)
json_documents = st.one_of(
    _json_leaves,
    st.lists(_json_nodes, max_size=4),
    st.dictionaries(any_text, _json_nodes, max_size=4),
).map(lambda doc: to_bytes(doc, ascii_only=True))

#: Characters of a DID's method-specific id; "~" and "^" stand for percent-encoded octets.
_ID_CHARS = string.ascii_letters + string.digits + "._-~^"


def _did_id(text: str) -> str:
    return text.replace("~", "%7E").replace("^", "%c3")


valid_dids = st.one_of(
    st.integers(0, 10**6).map(lambda i: f"did:mesh:agent-{i}"),
    st.builds(
        lambda method, inner, last: f"did:{method}:{''.join(s + ':' for s in inner)}{last}",
        st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=6),
        st.lists(st.text(_ID_CHARS, max_size=6).map(_did_id), max_size=2),
        st.text(_ID_CHARS, min_size=1, max_size=12).map(_did_id),
    ),
    st.sampled_from(["did:mesh:" + "a" * (MAX_DID_LENGTH - 9), "did:x:" + "%41" * 168]),
)
did_near_misses = st.one_of(
    valid_dids.map(lambda did: did + "\n"),
    valid_dids.map(lambda did: did + ":"),
    valid_dids.map(str.upper),
    st.tuples(valid_dids, any_text.filter(bool)).map("".join),
    st.sampled_from(
        [
            "",
            "did:",
            "did:mesh:",
            "did:mesh:%zz",
            "did:mesh:a b",
            "did:MESH:a",
            "did:mesh:\u0661",
            "did:mesh:a\u0000",
            "did:mesh:" + "a" * (MAX_DID_LENGTH - 8),
            "did:mesh:" + "a" * 10_000,
        ]
    ),
    scalars,
)
unit_values = st.one_of(
    st.floats(0.0, 1.0),
    st.sampled_from([0, 1, 0.0, 1.0, 0.29999999999999999, 0.3, 5e-324, 1 - 2**-53]),
)
value_near_misses = st.one_of(
    st.floats(),
    st.sampled_from([-0.0, -5e-324, 1 + 2**-52, 2, -1, True, False, "0.5", [0.5], {"v": 0.5}]),
    st.sampled_from(
        ["NaN", "Infinity", "-Infinity", "1e400", "1e-400", "1.0000000000000000001"]
    ).map(Raw),
    scalars,
)
sources = st.one_of(st.sampled_from(["policy_engine", "ids", "x" * 256]), any_text)
source_near_misses = st.one_of(
    st.sampled_from(["", " ", "\t\n", "\u2003", "x" * 257, "\u00e9" * 257]), scalars
)
dimension_names = st.sampled_from([d.value for d in DIMENSIONS])
dimension_near_misses = st.one_of(
    dimension_names.map(str.upper),
    dimension_names.map(lambda name: name + " "),
    st.integers(0, 5),
    scalars,
)
texts = st.one_of(st.none(), any_text)
text_near_misses = st.one_of(st.sampled_from(["x" * 257, "x" * 8193, ""]), scalars)

#: Offsets a zone may have (datetime allows up to a day, ISO 8601 writes hours and minutes).
zones = st.one_of(
    st.just(UTC),
    st.integers(-(24 * 60) + 1, 24 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m))),
    st.integers(-86_399, 86_399).map(lambda s: timezone(timedelta(seconds=s))),
)


@st.composite
def iso_texts(draw: st.DrawFn, moment: datetime) -> str:
    """``moment`` written in one of the ways ISO 8601 (or a near miss of it) allows."""
    text = moment.isoformat(
        sep=draw(st.sampled_from("T T t")),
        timespec=draw(st.sampled_from(["auto", "seconds", "milliseconds", "microseconds"])),
    )
    zone = draw(st.sampled_from(["as is", "Z", "z", "compact", "none", "hours"]))
    if moment.tzinfo is not None and zone != "as is":
        body, offset = text[:-6], text[-6:]
        if text.endswith("+00:00") and zone in ("Z", "z"):
            text = body + zone
        elif zone == "compact":
            text = body + offset.replace(":", "")
        elif zone == "none":
            text = body
        elif zone == "hours":
            text = body + offset[:3]
    return text


def iso_near(epoch_ms: int) -> st.SearchStrategy[str]:
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=epoch_ms)
    return zones.flatmap(lambda zone: iso_texts(moment.astimezone(zone)))


any_moment_texts = st.datetimes(
    min_value=datetime(1, 1, 1),
    max_value=datetime(9999, 12, 31, 23, 59, 59, 999_999),
    timezones=st.one_of(st.none(), zones),
).flatmap(iso_texts)
odd_timestamps = st.one_of(
    any_moment_texts,
    st.sampled_from(
        [
            "2000-01-01T00:00:00Z",
            "1999-12-31T23:59:59.999Z",
            "1999-12-31T23:59:59.9995Z",
            "2024-02-30T00:00:00Z",
            "2024-06-10T24:00:00Z",
            "2024-06-10T06:13:60Z",
            "2024-06-10T06:13:20.1234567Z",
            "2024-06-10T06:13:20.000000000000Z",
            "2024-06-10T06:13:20+2400",
            "2024-06-10T06:13:20+23:59:59",
            "2024-06-10T06:13:20+24:00",
            "+12024-06-10T06:13:20Z",
            "2024-W24-1T00:00:00Z",
            "20240610T061320Z",
            "\u0661\u0662\u0663\u0664-06-10T06:13:20Z",
            "0000-01-01T00:00:00Z",
            "0001-01-01T00:00:00+23:59",
            "9999-12-31T23:59:59.999999-23:59",
            "1718000000",
            "now",
        ]
    ),
    st.integers(),
    st.floats(),
    scalars,
)


def near_misses(name: str) -> st.SearchStrategy[Any]:
    return {
        "agent_did": did_near_misses,
        "value": value_near_misses,
        "source": source_near_misses,
        "dimension": dimension_near_misses,
        "timestamp": odd_timestamps,
    }.get(name, text_near_misses)


@st.composite
def mutated(
    draw: st.DrawFn, members: list[tuple[str, Any]], fields: tuple[str, ...], most: int = 3
) -> bytes:
    """The object ``members`` describes with up to ``most`` mutations, as bytes (which, unless
    ``most`` is 0, may be damaged once more)."""
    members = list(members)
    for _ in range(draw(st.integers(0, most))):
        name = draw(st.sampled_from(fields))
        where = [i for i, (n, _) in enumerate(members) if n == name]
        action = draw(st.sampled_from(["near miss", "oddity", "delete", "duplicate", "extra"]))
        if action == "delete":
            members = [m for m in members if m[0] != name]
        elif action == "duplicate":
            value = draw(st.one_of(near_misses(name), oddities))
            members.insert(draw(st.integers(0, len(members))), (name, value))
        elif action == "extra":
            members.insert(draw(st.integers(0, len(members))), (draw(any_text), draw(oddities)))
        else:
            value = draw(near_misses(name) if action == "near miss" else oddities)
            if where:
                members[where[0]] = (name, value)
            else:
                members.append((name, value))
    raw = to_bytes(Pairs(tuple(members)), ascii_only=draw(st.booleans()))
    damage = "none"
    if most:
        damage = draw(st.sampled_from(["none"] * 8 + ["cut", "append", "flip", "bom", "wrap"]))
    if damage == "cut" and raw:
        raw = raw[: draw(st.integers(0, len(raw) - 1))]
    elif damage == "append":
        raw += draw(st.sampled_from([b" ", b"\n\t ", b"x", b"}", b"\x00", b",{}"]))
    elif damage == "flip" and raw:
        at = draw(st.integers(0, len(raw) - 1))
        raw = raw[:at] + bytes([raw[at] ^ draw(st.integers(1, 255))]) + raw[at + 1 :]
    elif damage == "bom":
        raw = b"\xef\xbb\xbf" + raw
    elif damage == "wrap":
        raw = b"[" + raw + b"]"
    return raw


def keys_near(did: str) -> st.SearchStrategy[bytes | None]:
    exact = did.encode()
    return st.one_of(
        st.just(exact),
        st.just(exact),
        st.just(exact),
        st.none(),
        valid_dids.map(str.encode),
        st.binary(max_size=40),
        st.sampled_from(
            [exact + b" ", b"\xff" + exact, exact.upper(), did.encode("utf-16"), exact[:-1]]
        ),
        any_text.map(lambda text: text.encode("utf-8", "surrogatepass")),
    )


# ---------------------------------------------------------------------------- signals

SIGNAL_FIELDS = (
    "agent_did",
    "value",
    "source",
    "dimension",
    "details",
    "trace_id",
    "signal_id",
    "timestamp",
)


@dataclass(frozen=True)
class SignalCase:
    partitions: int
    tolerance_ms: int
    max_bytes: int
    kept_bytes: int
    dimension_index: int
    partition: int
    key: bytes | None
    value: bytes | None
    record_ms: int
    now_ms: int


@st.composite
def signal_bodies(
    draw: st.DrawFn, did: str, dimension_index: int, now_ms: int, tolerance_ms: int, mutations: int
) -> bytes:
    members: list[tuple[str, Any]] = [
        ("agent_did", did),
        ("value", draw(unit_values)),
        ("source", draw(sources)),
    ]
    if draw(st.booleans()):
        own = DIMENSIONS[dimension_index].value
        members.append(("dimension", draw(st.sampled_from([own, own]) | dimension_names)))
    for name in ("details", "trace_id", "signal_id"):
        if draw(st.integers(0, 3)) == 0:
            members.append((name, draw(texts)))
    if draw(st.booleans()):
        # Near the edges of what is accepted: 2000-01-01, and a day past the future tolerance.
        edge = draw(
            st.sampled_from([now_ms, EARLIEST_SIGNAL_MS, now_ms + tolerance_ms + FUTURE_REFUSAL_MS])
        )
        stamp = edge + draw(st.integers(-2 * DAY_MS, 2 * DAY_MS) | st.integers(-2000, 2000))
        members.append(("timestamp", draw(iso_near(stamp))))
    members = draw(st.permutations(members))
    return draw(mutated(members, SIGNAL_FIELDS, most=mutations))


@st.composite
def signal_cases(draw: st.DrawFn) -> SignalCase:
    partitions = draw(st.sampled_from([1, 2, 3, 6, 12, 64]))
    tolerance_ms = draw(st.sampled_from([0, 5000, 60_000, 3_600_000]))
    now_ms = draw(
        st.just(NOW_MS) | st.integers(EARLIEST_SIGNAL_MS - 10 * DAY_MS, 4_102_444_800_000)
    )
    did = draw(valid_dids)
    dimension_index = draw(st.integers(0, len(DIMENSIONS) - 1))
    # A third are well-formed records keyed and placed right (their values and timestamps still
    # vary): enough accepted ones to hold the acceptance invariants to.
    kind = draw(st.sampled_from(["clean"] * 4 + ["near valid"] * 4 + ["doc", "bytes", "none"]))
    value: bytes | None
    if kind in ("clean", "near valid"):
        mutations = 0 if kind == "clean" else 3
        value = draw(signal_bodies(did, dimension_index, now_ms, tolerance_ms, mutations))
    elif kind == "doc":
        value = draw(json_documents)
    elif kind == "bytes":
        value = draw(st.binary(max_size=200))
    else:
        value = None
    key = did.encode() if kind == "clean" else draw(keys_near(did))
    home = partition_for(did, partitions) if key is None else _partition(key, partitions)
    partition = home
    if kind != "clean":
        partition = draw(st.sampled_from([home, home, home]) | st.integers(0, partitions + 1))
    record_ms = draw(
        st.integers(now_ms - 2 * DAY_MS, now_ms + 2 * DAY_MS) | st.integers(INT64_MIN, INT64_MAX)
    )
    return SignalCase(
        partitions=partitions,
        tolerance_ms=tolerance_ms,
        max_bytes=draw(st.sampled_from([1024, 65_536, 2 << 20])),
        kept_bytes=draw(st.sampled_from([0, 1, 100, 1024, 4096, 65_536])),
        dimension_index=dimension_index,
        partition=partition,
        key=key,
        value=value,
        record_ms=record_ms,
        now_ms=now_ms,
    )


def _partition(key: bytes, partitions: int) -> int:
    return SignalIntake(max_bytes=1, partitions=partitions, future_tolerance_ms=0).partition_of(key)


def check_dead_letter(
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    record_ms: int | None,
    rejection: Rejection,
    now_ms: int,
    kept_bytes: int,
) -> None:
    letter = dead_letter(
        topic, partition, offset, key, value, record_ms, rejection, now_ms, kept_bytes
    )
    bound = 6 * (1024 + kept_bytes) + 4096
    assert len(letter) < bound, (len(letter), bound)
    parsed = DeadLetter.model_validate_json(letter)
    assert parsed.error_kind == rejection.kind[:64] and parsed.error.strip()
    kept = (
        (key, parsed.key, parsed.key_encoding, parsed.key_size, parsed.key_sha256),
        (value, parsed.value, parsed.value_encoding, parsed.value_size, parsed.value_sha256),
    )
    truncated = (parsed.key_truncated, parsed.value_truncated)
    limits = (min(kept_bytes, 1024), kept_bytes)
    for (original, text, encoding, size, sha256), cut, limit in zip(
        kept, truncated, limits, strict=True
    ):
        if original is None:
            assert (text, encoding, size, sha256, cut) == (None, None, None, None, False)
            continue
        assert size == len(original) and sha256 == hashlib.sha256(original).hexdigest()
        assert text is not None
        restored = text.encode() if encoding == "utf-8" else base64.b64decode(text)
        # A prefix of at most the limit (escaping may make the dead letter keep less), flagged
        # as cut exactly when it is not the whole.
        assert len(restored) <= limit and original.startswith(restored)
        assert cut == (len(restored) < len(original))
        assert cut or len(original) <= limit


def check_signal(case: SignalCase) -> None:
    intake = SignalIntake(
        max_bytes=case.max_bytes, partitions=case.partitions, future_tolerance_ms=case.tolerance_ms
    )
    fast = (
        case.value is not None
        and len(case.value) <= case.max_bytes
        and _accept_plain_signal(case.dimension_index, case.key, case.value, case.record_ms)
        is not None
    )
    result = intake.read(
        case.dimension_index, case.partition, case.key, case.value, case.record_ms, case.now_ms
    )
    if isinstance(result, Rejection):
        event(f"signal refused: {result.kind}{' (after the fast path)' if fast else ''}")
        assert result.kind in KNOWN_KINDS, result
        assert isinstance(result.message, str) and result.message.strip()
        check_dead_letter(
            f"agentmesh.signals.{DIMENSIONS[case.dimension_index].value}",
            case.partition,
            12_345,
            case.key,
            case.value,
            case.record_ms,
            result,
            case.now_ms,
            case.kept_bytes,
        )
        return
    event(f"signal accepted by the {'fast path' if fast else 'model'}")
    assert isinstance(result, AcceptedSignal)
    assert type(result.value) is float and math.isfinite(result.value)
    assert 0.0 <= result.value <= 1.0
    assert DID_RE.fullmatch(result.agent_did) and len(result.agent_did) <= MAX_DID_LENGTH
    assert case.key is not None and case.key == result.agent_did.encode()
    assert case.partition == partition_for(result.agent_did, case.partitions)
    assert type(result.timestamp_ms) is int
    assert result.timestamp_ms >= EARLIEST_SIGNAL_MS
    assert result.timestamp_ms <= case.now_ms + case.tolerance_ms + FUTURE_REFUSAL_MS
    assert isinstance(result.source, str) and 1 <= len(result.source) <= 256
    assert result.source.strip()
    assert result.signal_id is None or (
        isinstance(result.signal_id, str) and len(result.signal_id) <= 256
    )
    # What is accepted is what the model accepts, and it can be written out again (a state, an
    # explanation, a revocation carry these strings).
    model = Signal.model_validate_json(case.value or b"")
    assert (model.agent_did, float(model.value), model.source, model.signal_id) == (
        result.agent_did,
        result.value,
        result.source,
        result.signal_id,
    )
    orjson.dumps([result.agent_did, result.source, result.signal_id])


HUGE = 1 << 20
VALID_SIGNAL = {"agent_did": "did:mesh:agent-42", "value": 0.5, "source": "policy_engine"}
HOME_42 = partition_for("did:mesh:agent-42", 6)


def huge_case(
    key: bytes | None, value: bytes, kept_bytes: int, max_bytes: int = 2 << 20
) -> SignalCase:
    return SignalCase(6, 5000, max_bytes, kept_bytes, 0, HOME_42, key, value, NOW_MS, NOW_MS)


# Records of a megabyte: control characters (six bytes each once escaped), bytes that are not
# UTF-8 (base64), quotes, a key quoted in the reason (four bytes a character), padding past the
# size limit, an oversized field, a megabyte of ignored members, nesting past any parser's depth.
@MANY
@given(case=signal_cases())
@example(case=huge_case(b"\x01" * HUGE, b"\x01" * HUGE, 4096))
@example(case=huge_case(b"\xff" * HUGE, b"\xff" * HUGE, 65_536))
@example(case=huge_case(b"\x01" * HUGE, b'"' * HUGE, 0))
@example(case=huge_case("\U0001f600".encode() * (HUGE // 4), orjson.dumps(VALID_SIGNAL), 0))
@example(case=huge_case(b"\x01" * HUGE, orjson.dumps(VALID_SIGNAL) + b" " * HUGE, 4096, 65_536))
@example(
    case=huge_case(
        b"did:mesh:agent-42",
        orjson.dumps({**VALID_SIGNAL, "details": "\x01" * HUGE}),
        4096,
    )
)
@example(
    case=huge_case(
        b"did:mesh:agent-42",
        orjson.dumps({**VALID_SIGNAL, **{f"\x01{i}": i for i in range(HUGE // 16)}}),
        4096,
    )
)
@example(case=huge_case(b"did:mesh:agent-42", b"[" * HUGE, 4096))
def test_any_signal_record_is_accepted_sanely_or_dead_lettered(case: SignalCase) -> None:
    check_signal(case)


# ---------------------------------------------------------------------------- ticks


@st.composite
def tick_cases(draw: st.DrawFn) -> tuple[bytes | None, int, int]:
    now_ms = draw(st.just(NOW_MS) | st.integers(0, 4_102_444_800_000))
    tolerance_ms = draw(st.sampled_from([1, 250, 60_000, 3_600_000]))
    kind = draw(st.sampled_from(["near"] * 4 + ["edge", "odd time", "none", "bytes", "doc"]))
    if kind == "none":
        return None, now_ms, tolerance_ms
    if kind in ("bytes", "doc"):
        raw = draw(st.binary(max_size=40) if kind == "bytes" else json_documents)
        return raw, now_ms, tolerance_ms
    t: Any
    if kind == "near":
        t = draw(st.integers(now_ms - 2 * tolerance_ms, now_ms + 2 * tolerance_ms))
    elif kind == "edge":
        t = now_ms + draw(st.sampled_from([-1, 1])) * (tolerance_ms + draw(st.integers(0, 1)))
    else:
        t = draw(
            st.integers()
            | st.floats()
            | st.sampled_from([True, False, str(now_ms), [now_ms], {"t": now_ms}, float(now_ms)])
            | st.sampled_from(["1e3", f"{now_ms}.0", "-0", "18446744073709551616"]).map(Raw)
            | oddities
        )
    members = [("t", t)]
    if draw(st.integers(0, 3)) == 0:
        other = (draw(st.sampled_from(["t", "x"])), draw(oddities))
        members.insert(draw(st.integers(0, 1)), other)
    return to_bytes(Pairs(tuple(members)), ascii_only=True), now_ms, tolerance_ms


@MANY
@given(case=tick_cases())
def test_any_tick_record_is_applied_near_the_clock_or_refused(
    case: tuple[bytes | None, int, int],
) -> None:
    raw, now_ms, tolerance_ms = case
    tick_ms = decode_tick(raw)
    assert tick_ms is None or (type(tick_ms) is int and INT64_MIN <= tick_ms <= 2**64)
    refusal = tick_refusal(tick_ms, now_ms, tolerance_ms)
    if refusal is None:
        event("tick applied")
        assert type(tick_ms) is int and abs(tick_ms - now_ms) <= tolerance_ms
    else:
        event("tick refused: " + ("not a tick" if tick_ms is None else "far from the clock"))
        assert isinstance(refusal, str) and refusal.strip()


# ---------------------------------------------------------------------------- commands

COMMAND_FIELDS = ("command", "agent_did", "requested_by", "reason", "request_id")
#: A command with three unknown members named by 700 control characters each.
FORBIDDEN_NAMES = (
    b'{"agent_did": "did:a:b", "requested_by": "ops", "reason": "x", '
    + b", ".join(b'"' + b"\\u0001" * 700 + b'%d": 1' % i for i in range(3))
    + b"}"
)


@st.composite
def command_cases(draw: st.DrawFn) -> tuple[bytes | None, int, int, bytes | None, int]:
    partitions = draw(st.sampled_from([1, 6, 12]))
    did = draw(valid_dids)
    members: list[tuple[str, Any]] = [("agent_did", did)]
    if draw(st.booleans()):
        members.append(("command", "reinstate"))
    members.append(
        ("requested_by", draw(st.sampled_from(["ops@example.com", "x" * 256]) | any_text))
    )
    members.append(("reason", draw(st.sampled_from(["false positive", "x" * 2048]) | any_text)))
    if draw(st.booleans()):
        members.append(("request_id", draw(texts)))
    kind = draw(st.sampled_from(["clean"] * 4 + ["near valid"] * 4 + ["doc", "bytes", "none"]))
    value: bytes | None
    if kind in ("clean", "near valid"):
        mutations = 0 if kind == "clean" else 3
        value = draw(mutated(draw(st.permutations(members)), COMMAND_FIELDS, most=mutations))
    elif kind == "doc":
        value = draw(json_documents)
    elif kind == "bytes":
        value = draw(st.binary(max_size=200))
    else:
        value = None
    home = partition = partition_for(did, partitions)
    if kind != "clean":
        partition = draw(st.sampled_from([home, home, home]) | st.integers(0, partitions - 1))
    key = draw(keys_near(did))
    kept_bytes = draw(st.sampled_from([0, 100, 4096]))
    return value, partition, partitions, key, kept_bytes


@MANY
@given(case=command_cases())
@example(case=(b'{"' + b"\\u0001" * 700 + b'": 1}', 0, 1, b"\x01" * 1024, 0))
@example(case=(FORBIDDEN_NAMES, 0, 1, b"\x01" * 1024, 4096))
@example(case=(FORBIDDEN_NAMES, 0, 1, b"\x01" * 1024, 0))
def test_any_command_record_is_a_command_for_its_partition_or_a_reason(
    case: tuple[bytes | None, int, int, bytes | None, int],
) -> None:
    value, partition, partitions, key, kept_bytes = case
    intake = SignalIntake(max_bytes=65_536, partitions=partitions, future_tolerance_ms=5000)
    command = read_command(value, partition, intake.partition_of)
    if isinstance(command, str):
        event("command refused")
        assert command.strip()
        # The worker dead-letters it, keyed and cut like a refused signal.
        check_dead_letter(
            "agentmesh.trust.internal.commands",
            partition,
            7,
            key,
            value,
            NOW_MS,
            Rejection("invalid_command", command),
            NOW_MS,
            kept_bytes,
        )
        return
    event("command accepted")
    assert isinstance(command, ReinstateCommand) and command.command == "reinstate"
    assert DID_RE.fullmatch(command.agent_did) and len(command.agent_did) <= MAX_DID_LENGTH
    assert partition == partition_for(command.agent_did, partitions)
    assert 1 <= len(command.requested_by) <= 256 and 1 <= len(command.reason) <= 2048
    assert command.request_id is None or len(command.request_id) <= 256
    orjson.dumps(command.model_dump())  # written out again in the reinstatement event


# ---------------------------------------------------------------------------- configuration

CONFIG_FIELDS = (
    "weights",
    "revocation_threshold",
    "warning_threshold",
    "floors",
    "requested_by",
    "requested_at",
)
weights_5 = st.lists(st.integers(0, 1000), min_size=5, max_size=5)
dimension_or_not = st.one_of(dimension_names, any_text)


@st.composite
def config_values(draw: st.DrawFn) -> bytes:
    """A configuration record close to a valid one (or valid: the weights may still miss the
    sum by rounding, the thresholds cross)."""
    raw_weights = draw(weights_5)
    weights: dict[str, Any] = {
        d.value: w / (sum(raw_weights) or 1) for d, w in zip(DIMENSIONS, raw_weights, strict=True)
    }
    if draw(st.integers(0, 3)) == 0:
        name = draw(dimension_or_not)
        weights[name] = draw(value_near_misses)
    low = draw(st.integers(0, 1000))
    members: list[tuple[str, Any]] = [
        ("weights", weights),
        ("revocation_threshold", low),
        ("warning_threshold", draw(st.integers(low, 1000) | st.integers(-5, 1005))),
    ]
    if draw(st.booleans()):
        floors = {
            draw(dimension_or_not): {
                "floor": draw(st.floats(0, 100) | value_near_misses),
                "min_signals": draw(st.integers(1, 10) | st.integers()),
            }
            for _ in range(draw(st.integers(0, 3)))
        }
        members.append(("floors", floors))
    if draw(st.booleans()):
        members.append(("requested_by", draw(texts)))
    if draw(st.booleans()):
        members.append(("requested_at", draw(odd_timestamps)))
    kind = draw(st.sampled_from(["near valid"] * 7 + ["document", "bytes"]))
    if kind == "document":
        return draw(json_documents)
    if kind == "bytes":
        return draw(st.binary(max_size=100))
    return draw(mutated(draw(st.permutations(members)), CONFIG_FIELDS, most=2))


def assert_valid_config(config: ScoringConfig) -> None:
    again = ScoringConfig.validated(
        config.weights,
        config.revocation_threshold,
        config.warning_threshold,
        version=config.version,
        floors=config.floors,
    )
    assert again == config
    assert all(type(w) is float for w in config.weights)


@MANY
@given(value=config_values() | st.none(), offset=st.integers(0, 2**62))
def test_any_config_record_is_a_valid_configuration_or_invalid_scoring_config(
    value: bytes | None, offset: int
) -> None:
    try:
        config = config_from_record(value, offset)
    except InvalidScoringConfig as exc:
        event("configuration refused")
        assert str(exc).strip()
        return
    event("configuration accepted")
    assert config.version == offset + 1
    assert_valid_config(config)


valid_configs = st.builds(
    lambda w, low, high, floor: ScoringConfig.validated(
        [(x + 1) / (sum(w) + 5) for x in w],
        min(low, high),
        max(low, high),
        floors=(DimensionFloor(floor, 2) if floor is not None else None, *[None] * 4),
    ),
    weights_5,
    st.integers(0, 1000),
    st.integers(0, 1000),
    st.none() | st.floats(0, 100),
)


@settings(MANY, max_examples=1000)
@given(
    records=st.lists(
        st.tuples(
            st.just(CONFIG_KEY) | st.just(CONFIG_KEY) | st.none() | st.binary(max_size=20),
            valid_configs.map(encode_update) | config_values() | st.none(),
            st.integers(-3, 5),
        ),
        max_size=8,
    )
)
def test_the_config_follower_keeps_a_valid_configuration_whose_version_never_falls(
    records: list[tuple[bytes | None, bytes | None, int]],
) -> None:
    follower = ConfigFollower("127.0.0.1:1", "fuzz.trust.config", DEFAULT_CONFIG)
    offset = 0
    rejected = 0
    for key, value, step in records:
        offset = max(0, offset + step)  # mostly onwards; sometimes a replay of older offsets
        before = follower.current
        try:
            carried = config_from_record(value, offset) if key == CONFIG_KEY else None
        except InvalidScoringConfig:
            carried = None
        follower.apply(key, value, offset)
        assert_valid_config(follower.current)
        assert follower.current.version >= before.version
        if carried is None:
            rejected += 1
            assert follower.current is before
            assert follower.last_rejection is not None and len(follower.last_rejection) < 600
        elif carried.version > before.version:
            event("configuration came into force")
            assert follower.current == carried
        else:
            event("older configuration ignored")
            assert follower.current is before
    assert follower.rejected_records == rejected


# ---------------------------------------------------------------------------- stored state


def _stored_states() -> list[AgentState]:
    """States as real transitions leave them, between them every optional part a state has:
    open windows, history, a revocation by a signal and by a window, a reinstatement, the last
    updates, the recent signals and the dimension levels accepted at reinstatement."""
    windows = WindowPolicy(30_000, 5_000)
    did = "did:mesh:agent-7"
    trigger = SignalTrigger
    active = AgentState()
    for offset, (dimension, value, at) in enumerate(
        [(0, 0.9, NOW_MS - 50_000), (3, 0.4, NOW_MS - 20_000), (2, 0.7, NOW_MS)]
    ):
        apply_signal(
            did, active, trigger(dimension, 1, offset, f"s{offset}"), value, at, at, at - 1,
            windows, DEFAULT_CONFIG, "ids",
        )  # fmt: skip
    closed = decode_state(encode_state(active))
    close_windows(did, closed, NOW_MS - 10_000, 4, windows, DEFAULT_CONFIG)
    revoked = decode_state(encode_state(closed))
    apply_signal(
        did, revoked, trigger(4, 1, 9, None), 0.0, NOW_MS, NOW_MS, NOW_MS, windows,
        ScoringConfig.validated(DEFAULT_WEIGHTS, 500, 600), "ids",
    )  # fmt: skip
    reinstated = decode_state(encode_state(revoked))
    apply_reinstatement(did, reinstated, 3, NOW_MS + 1, "ops", "checked", "r-1")
    by_window = decode_state(encode_state(reinstated))
    by_window.revoked = True
    by_window.revocation = Revocation(
        "rid", NOW_MS, 250, 300, "score 250 below 300", (10.0, 0.0, 50.0, 100.0, 42.5),
        WindowTrigger(NOW_MS - 60_000), 3,
    )  # fmt: skip
    by_window.reinstated_dimension_scores = (None, 12.5, None, 0.0, 100.0)
    return [AgentState(), active, closed, revoked, reinstated, by_window]


STORED_STATES = [orjson.loads(encode_state(state)) for state in _stored_states()]
boundary_ints = st.sampled_from(
    # The int64 ends, and 2**64 - 1: the largest integer orjson reads.
    [INT64_MIN, INT64_MIN + 1, INT64_MAX, INT64_MAX - 1, -1, 0, 1, 2**53 + 1, 2**64 - 1]
)
boundary_floats = st.sampled_from(
    [-0.0, 5e-324, 1.0000000000000002, 100.00000000000001, 1e308, -1e-300, 0.3]
)


def like(node: Any) -> st.SearchStrategy[Any]:
    """Another value for ``node``: mostly of its own type (what a damaged record is most
    likely to hold past a type check), sometimes anything."""
    if type(node) is bool:
        own: st.SearchStrategy[Any] = st.booleans()
    elif type(node) is int:
        own = boundary_ints | st.integers(INT64_MIN, INT64_MAX) | st.integers(-3, 1001)
    elif type(node) is float:
        own = boundary_floats | st.floats() | st.floats(0.0, 1.0) | st.floats(0.0, 100.0)
    elif type(node) is str:
        own = any_text
    else:
        own = st.just([]) | st.just(None)
    return own | own | own | oddities


@st.composite
def mutated_tree(draw: st.DrawFn, tree: Any) -> Any:
    """``tree`` (a decoded JSON array) with one node somewhere replaced, removed or added."""
    if not isinstance(tree, list) or not tree or draw(st.integers(0, 4)) == 0:
        return draw(like(tree))
    at = draw(st.integers(0, len(tree) - 1))
    copy = list(tree)
    action = draw(st.sampled_from(["descend"] * 6 + ["delete", "insert", "repeat"]))
    if action == "delete":
        del copy[at]
    elif action == "insert":
        copy.insert(at, draw(like(copy[at])))
    elif action == "repeat":
        copy.insert(at, copy[at])
    else:
        copy[at] = draw(mutated_tree(copy[at]))
    return copy


@st.composite
def state_records(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["mutated"] * 7 + ["format 1", "document", "bytes"]))
    if kind == "document":
        return draw(json_documents)
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    tree = draw(st.sampled_from(STORED_STATES))
    if kind == "format 1":
        tree = [1, *tree[1:17]]
    for _ in range(draw(st.integers(1, 3))):
        tree = draw(mutated_tree(tree))
    return to_bytes(tree, ascii_only=draw(st.booleans()))


def work_on(state: AgentState) -> list[tuple[bytes, type[BaseModel]]]:
    """What the worker may do with a state it read, and the messages that leads to: publish
    again what it records (a redelivered tick or signal), apply a critical signal, close every
    window, reinstate."""
    did = "did:mesh:agent-42"
    config = ScoringConfig.validated(DEFAULT_WEIGHTS, 450, 600)  # revokes readily
    revoked: list[Revocation | None] = [state.revocation]
    updates = list(state.last_updates)
    signal = apply_signal(
        did, state, SignalTrigger(1, 0, 10**12, "s"), 0.1, NOW_MS, NOW_MS, NOW_MS, WINDOWS,
        config, "fuzz",
    )  # fmt: skip
    revoked += [signal.revocation, signal.republish]
    closed = close_windows(did, state, NOW_MS + DAY_MS, 10**12, WINDOWS, config)
    updates += closed.updates
    revoked.append(closed.revocation)
    lifted = apply_reinstatement(did, state, 10**12, NOW_MS, "ops", "fuzz", None)
    messages: list[tuple[bytes, type[BaseModel]]] = [
        (score_update_message(did, update), ScoreUpdate) for update in updates
    ]
    messages += [
        (revocation_message(did, r, NAMES.signals, WINDOWS.size_ms), RevocationEvent)
        for r in revoked
        if r is not None
    ]
    messages += [
        (reinstatement_message(did, r), ReinstatementEvent)
        for r in (lifted.reinstatement, lifted.republish)
        if r is not None
    ]
    return messages


def _state_with(field: int, value: Any) -> bytes:
    tree = orjson.loads(encode_state(AgentState()))
    tree[field] = value
    return orjson.dumps(tree)


@MANY
@given(raw=state_records())
def test_any_stored_state_decodes_to_a_state_or_a_format_error(raw: bytes) -> None:
    try:
        state = decode_state(raw)
    except StateFormatError as exc:
        event("state refused")
        assert str(exc).strip()
        return
    event("state decoded")
    assert isinstance(state, AgentState)
    assert decode_state(encode_state(state)) == state
    scores = state.dimension_scores()
    assert all(0.0 <= s <= 100.0 for s in scores)
    assert 0 <= total_score(scores, DEFAULT_WEIGHTS) <= 1000


@settings(MANY, max_examples=1000, phases=[Phase.explicit, Phase.generate])
@given(raw=state_records())
# Window counts each below 2**63, together past 2**64: the update's signals_in_window cannot be
# written, closing the window raises TypeError.
@example(raw=_state_with(4, [[NOW_MS - 60_000, [INT64_MAX] * 3 + [0, 0], 0]]))
# The published score (the next update's previous score) at 2**64 - 1: score_change cannot be
# written, closing the window raises TypeError.
@example(raw=_state_with(6, 2**64 - 1))
# At -2**63: the update is written, with a previous score and a change outside the contract.
@example(raw=_state_with(6, INT64_MIN))
# A lifetime count at 2**63 - 1: one more signal, and the state written is refused when read.
@example(raw=_state_with(2, [INT64_MAX, INT64_MAX, 0, 0, 0]))
def test_a_decoded_state_can_be_worked_on_published_and_read_again(raw: bytes) -> None:
    try:
        state = decode_state(raw)
    except StateFormatError:
        return
    for message, model in work_on(state):
        model.model_validate_json(message)
    assert decode_state(encode_state(state)) == state


# ---------------------------------------------------------------------------- the pipeline

PIPELINE_PARTITIONS = 2
#: A high revocation threshold: one critical signal revokes, so revocations and reinstatements
#: happen in short runs.
PIPELINE_CONFIG = ScoringConfig.validated(DEFAULT_WEIGHTS, 450, 600)


@dataclass(frozen=True)
class In:
    """One record to feed the pipeline (its offset is given when it is fed)."""

    topic: str
    partition: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


@st.composite
def pipeline_records(draw: st.DrawFn, agents: list[str]) -> In:
    did = draw(st.sampled_from(agents))
    home = partition_for(did, PIPELINE_PARTITIONS)
    kind = draw(st.sampled_from(["signal"] * 5 + ["odd signal", "tick", "tick", "command"]))
    # Mostly in windows a tick at NOW_MS closes (they end, plus grace, by then).
    stamp_ms = NOW_MS + draw(
        st.sampled_from([-100_000, -70_000, -40_000, -36_000]) | st.integers(-120_000, 10_000)
    )
    if kind in ("signal", "odd signal"):
        topic = NAMES.signals[draw(st.integers(0, len(DIMENSIONS) - 1))]
        body = {
            "agent_did": did,
            "value": draw(st.floats(0.0, 1.0) | st.sampled_from([0.0, 0.1, 0.29, 0.3, 1.0])),
            "source": "fuzz",
            "timestamp": datetime.fromtimestamp(stamp_ms / 1000, UTC).isoformat(),
        }
        if kind == "signal":
            value: bytes | None = orjson.dumps(body)
        else:
            value = draw(
                mutated(list(body.items()), SIGNAL_FIELDS, most=2) | st.binary(max_size=50)
            )
        # Mostly keyed and placed as a producer should, so that most are applied.
        key = did.encode() if draw(st.integers(0, 5)) else draw(keys_near(did))
        partition = home if draw(st.integers(0, 5)) else draw(st.integers(0, 1))
        return In(topic, partition, key, value, stamp_ms)
    if kind == "tick":
        t = draw(st.just(NOW_MS) | st.integers(NOW_MS - 90_000, NOW_MS + 90_000))
        value = draw(st.just(orjson.dumps({"t": t})) | st.binary(max_size=20) | json_documents)
        return In(NAMES.ticks, draw(st.integers(0, 1)), None, value, NOW_MS)
    command = {"agent_did": did, "requested_by": "ops", "reason": "fuzz"}
    value = draw(
        st.just(orjson.dumps(command))
        | mutated(list(command.items()), COMMAND_FIELDS, most=2)
        | st.binary(max_size=50)
    )
    return In(NAMES.commands, draw(st.just(home) | st.integers(0, 1)), did.encode(), value, NOW_MS)


#: In a run, a batch that delivers the signals of the batch before it again (at-least-once).
REDELIVERY: list[In] = []


@st.composite
def pipeline_runs(draw: st.DrawFn) -> list[list[In]]:
    agents = draw(st.lists(valid_dids, min_size=1, max_size=3, unique=True))
    records = st.lists(pipeline_records(agents), min_size=1, max_size=16)
    batches = draw(st.lists(records, min_size=1, max_size=4))
    # Mostly a batch ends with a tick of the worker's own on every partition, which closes the
    # windows its signals opened.
    closing = [In(NAMES.ticks, p, None, orjson.dumps({"t": NOW_MS}), NOW_MS) for p in (0, 1)]
    run: list[list[In]] = []
    for batch in batches:
        run.append(batch + closing if draw(st.integers(0, 3)) else batch)
        if draw(st.integers(0, 3)) == 0:
            run.append(REDELIVERY)
    return run


async def run_pipeline(batches: list[list[In]], state_dir: Path) -> FakeProducer:
    """Feed ``batches`` to a pipeline on a local store; returns what it published."""
    producer = FakeProducer()
    pipeline = unit_pipeline(
        state_dir,
        producer,
        names=NAMES,
        windows=WINDOWS,
        config=PIPELINE_CONFIG,
        now_ms=NOW_MS,
        partitions=PIPELINE_PARTITIONS,
    )
    store, intake = pipeline.store, pipeline.handlers.intake
    counters = pipeline.counters
    next_offset: Counter[tuple[str, int]] = Counter()
    delivered: list[FakeMessage] = []
    applied = 0
    try:
        for batch in batches:
            if batch is REDELIVERY:
                # Each signal applied before is recognised; each refused is refused again.
                skipped, letters = counters.duplicates_skipped, counters.dead_letters
                await pipeline.process_records(delivered)
                assert counters.duplicates_skipped - skipped == applied
                assert counters.dead_letters - letters == len(delivered) - applied
                continue
            fed: list[tuple[In, int]] = []
            for record in batch:
                fed.append((record, next_offset[(record.topic, record.partition)]))
                next_offset[(record.topic, record.partition)] += 1
            signals = [(r, o) for r, o in fed if r.topic in NAMES.signals]
            internal = [(r, o) for r, o in fed if r.topic not in NAMES.signals]
            # Signals: each is applied, recognised as a redelivery, or dead-lettered.
            seen = sum(counters.signals_applied) + counters.duplicates_skipped
            letters = counters.dead_letters
            delivered = [
                FakeMessage(r.topic, r.partition, o, r.key, r.value, r.timestamp_ms)
                for r, o in signals
            ]
            await pipeline.process_records(delivered)
            applied = sum(counters.signals_applied) + counters.duplicates_skipped - seen
            assert applied + counters.dead_letters - letters == len(signals)
            # Ticks and commands: each tick is applied or counted as refused or stale; each
            # command that is not one is counted and dead-lettered.
            ticks = counters.ticks + _refused(pipeline, NAMES.ticks)
            refused_commands = _refused(pipeline, NAMES.commands)
            letters = counters.dead_letters
            # A command for an agent with no state is refused too (none is created for it);
            # ticks and commands create no agent, so who is known cannot change in the batch.
            for_unknown_agents = 0
            for r, _ in internal:
                if r.topic != NAMES.commands:
                    continue
                command = read_command(r.value, r.partition, intake.partition_of)
                if not isinstance(command, str):
                    known = store.lookup(r.partition, command.agent_did.encode())
                    for_unknown_agents += known is None
            await pipeline.process_batch(
                [
                    FakeEvent(
                        FakeMessage(r.topic, r.partition, o, r.key, r.value, r.timestamp_ms / 1000)
                    )
                    for r, o in internal
                ]
            )
            n_ticks = sum(1 for r, _ in internal if r.topic == NAMES.ticks)
            assert counters.ticks + _refused(pipeline, NAMES.ticks) - ticks == n_ticks
            not_commands = sum(
                1
                for r, _ in internal
                if r.topic == NAMES.commands
                and isinstance(read_command(r.value, r.partition, intake.partition_of), str)
            )
            refused = not_commands + for_unknown_agents
            assert _refused(pipeline, NAMES.commands) - refused_commands == refused
            assert counters.dead_letters - letters == refused
            for r, o in internal:
                if r.topic != NAMES.commands:
                    continue
                command = read_command(r.value, r.partition, intake.partition_of)
                if not isinstance(command, str):
                    state = store.lookup(r.partition, command.agent_did.encode())
                    # Applied (or refused, and recorded as seen) when the agent is known.
                    assert state is None or state.applied_command_offset >= o
            await pipeline.make_durable()
    finally:
        for partition in range(PIPELINE_PARTITIONS):
            store.discard(partition)  # closes the database before its directory goes
    assert pipeline.failed is None
    # Every output the worker published is a valid message of its topic.
    for _, value, _ in producer.on(NAMES.deadletter):
        DeadLetter.model_validate_json(value or b"")
    for _, value, _ in producer.on(NAMES.scores):
        ScoreUpdate.model_validate_json(value or b"")
    for _, value, _ in producer.on(NAMES.revocations):
        kind = orjson.loads(value or b"")["type"]
        model = RevocationEvent if kind == "revoked" else ReinstatementEvent
        model.model_validate_json(value or b"")
    for key, value, partition in producer.on(NAMES.agent_state):
        if key is not None and value is not None and not key.startswith(b"\x00"):
            decode_state(value)
            assert partition == partition_for(key.decode(), PIPELINE_PARTITIONS)
    return producer


def _refused(pipeline: ScoringPipeline, topic: str) -> int:
    return sum(n for (t, _), n in pipeline.counters.internal_rejected.items() if t == topic)


@settings(MANY, max_examples=200)
@given(batches=pipeline_runs())
def test_the_pipeline_takes_or_refuses_every_record_on_every_topic(
    batches: list[list[In]],
) -> None:
    with tempfile.TemporaryDirectory(prefix="fuzz-pipeline-") as directory:
        published = asyncio.run(run_pipeline(batches, Path(directory)))
    for topic, what in (
        (NAMES.deadletter, "dead letters"),
        (NAMES.scores, "score updates"),
        (NAMES.revocations, "revocations or reinstatements"),
    ):
        event(f"pipeline published {what}: {bool(published.on(topic))}")
    event(f"pipeline had signals redelivered: {any(b is REDELIVERY for b in batches)}")
