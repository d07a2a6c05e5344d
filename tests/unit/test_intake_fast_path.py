"""The plain-signal fast path accepts only what the Signal model accepts, with the same values.

Signal intake checks the common shape of a signal with plain comparisons before falling back to
full pydantic validation; these tests hold it to the model, input by input.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import example, given, settings
from hypothesis import strategies as st

from streams.processing.intake import (
    AcceptedSignal,
    _accept_plain_signal,
    _read_with_model,
    read_signal,
)
from streams.scoring.model import DIMENSIONS

RECORD_MS = 1_718_000_000_123
DID = "did:mesh:agent-42"

dids = st.one_of(
    st.just(DID),
    st.from_regex(r"did:[a-z0-9]{1,5}:[A-Za-z0-9._%:-]{0,12}", fullmatch=True),
    st.text(max_size=20),
    st.just(DID + "\n"),
    st.just("did:mesh:" + "a" * 600),
    st.integers(),
    st.none(),
)
numbers = st.one_of(
    st.floats(min_value=-0.5, max_value=1.5, allow_nan=False, allow_infinity=False),
    st.sampled_from([0, 1, 2, -1, 0.0, 1.0, True, False]),
    st.text(max_size=4),
    st.none(),
)
texts = st.one_of(
    st.text(max_size=10),
    st.sampled_from(["", " ", "\t\n", "\u2003", "policy_engine", "x" * 256, "x" * 257]),
    st.integers(),
    st.none(),
)
timestamps = st.one_of(
    st.sampled_from(
        [
            "2024-06-10T06:13:20Z",
            "2024-06-10T06:13:20.456Z",
            "2024-06-10T06:13:20.123456+02:00",
            "2024-06-10T06:13:20-05:30",
            "2024-06-10T06:13:20",  # no zone: the model requires one
            "2024-06-10",
            "2024-13-10T06:13:20Z",
            "2024-06-10T24:00:00Z",
            "2024-06-10T06:13:60Z",
            "2024-06-10 06:13:20Z",
            "2024-06-10T06:13:20.1234567Z",
            "2024-06-10T06:13:20+25:00",
            "١٢٣٤-06-10T06:13:20Z",
        ]
    ),
    st.integers(min_value=0, max_value=2_000_000_000_000),
    st.none(),
)
optional_fields = st.fixed_dictionaries(
    {},
    optional={
        "dimension": st.one_of(st.sampled_from([d.value for d in DIMENSIONS]), texts),
        "details": st.one_of(texts, st.just("d" * 8193)),
        "trace_id": texts,
        "signal_id": texts,
        "timestamp": timestamps,
        "unknown_extra": texts,
    },
)


valid_bases = st.fixed_dictionaries(
    {
        "agent_did": st.one_of(
            st.just(DID), st.from_regex(r"did:[a-z0-9]{1,5}:[A-Za-z0-9._-]{1,12}", fullmatch=True)
        ),
        "value": st.floats(min_value=0, max_value=1),
        "source": st.text(min_size=1, max_size=12).filter(str.strip),
    }
)


@st.composite
def signal_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly valid signals with a field or two changed, dropped or added: the boundary."""
    body: dict[str, Any] = draw(valid_bases)
    for name, strategy in (("agent_did", dids), ("value", numbers), ("source", texts)):
        change = draw(st.integers(0, 9))
        if change == 0:
            del body[name]
        elif change <= 2:
            body[name] = draw(strategy)
    body.update(draw(optional_fields))
    return body


def agree(dimension: int, key: bytes | None, raw: bytes) -> AcceptedSignal | None:
    fast = _accept_plain_signal(dimension, key, raw, RECORD_MS)
    if fast is not None:
        assert _read_with_model(dimension, key, raw, RECORD_MS) == fast
        assert read_signal(dimension, key, raw, RECORD_MS, 1 << 20) == fast
    return fast


@settings(max_examples=3000, deadline=None)
@given(body=signal_bodies(), dimension=st.integers(0, 4), keyed_right=st.booleans())
@example(body={"agent_did": DID, "value": 1, "source": "s"}, dimension=0, keyed_right=True)
@example(body={"agent_did": DID, "value": True, "source": "s"}, dimension=0, keyed_right=True)
def test_fast_path_accepts_only_what_the_model_accepts(
    body: dict[str, Any], dimension: int, keyed_right: bool
) -> None:
    raw = json.dumps(body).encode()  # json, not orjson: it writes integers of any size
    did = body.get("agent_did")
    key = did.encode() if keyed_right and isinstance(did, str) else b"did:mesh:someone-else"
    agree(dimension, key, raw)


def test_fast_path_takes_the_ordinary_shapes() -> None:
    plain = {"agent_did": DID, "value": 0.5, "source": "policy_engine"}
    for extra in (
        {},
        {"timestamp": "2024-06-10T06:13:20.456Z", "signal_id": "sig-1"},
        {"dimension": "policy_compliance", "trace_id": "t", "details": "why"},
    ):
        raw = orjson.dumps({**plain, **extra})
        assert agree(0, DID.encode(), raw) is not None, extra


def test_duplicate_keys_and_odd_json_agree_with_the_model() -> None:
    for raw in (
        b'{"agent_did": "did:mesh:a", "value": 0.2, "value": 0.9, "source": "s"}',
        b'{"agent_did": "did:mesh:a", "value": 0.5, "source": "s", "source": " "}',
        b'{"agent_did": "did:mesh:a", "value": 5e-1, "source": "s"}',
        b'{"agent_did": "did:mesh:a", "value": NaN, "source": "s"}',
        b'[{"agent_did": "did:mesh:a", "value": 0.5, "source": "s"}]',
        b'{"agent_did": "did:mesh:a", "value": 0.5, "source": "\\ud800"}',
    ):
        agree(0, b"did:mesh:a", raw)
