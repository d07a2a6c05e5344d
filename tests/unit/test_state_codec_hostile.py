"""Decoding stored agent state trusts nothing: any bytes give a state the transitions can work on,
or StateFormatError (never another exception). Format 1 records still decode.

A current record carries a CRC of its bytes, so damage is found whatever it hits; to reach the
field checks behind it, the tests below seal what they change (:func:`sealed`)."""

from __future__ import annotations

import copy
import zlib
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from streams.scoring.agent import (
    AgentState,
    SignalTrigger,
    apply_reinstatement,
    apply_signal,
    close_windows,
    reinstate,
)
from streams.scoring.codec import (
    FORMAT_VERSION,
    StateFormatError,
    decode_state,
    encode_state,
    sealed_schedule,
)
from streams.scoring.model import DEFAULT_WEIGHTS, DimensionFloor, ScoringConfig
from streams.scoring.windows import WindowPolicy

WINDOWS = WindowPolicy(size_ms=10_000, grace_ms=2_000)
CONFIG = ScoringConfig.validated(
    DEFAULT_WEIGHTS, floors=[None, None, None, DimensionFloor(40), None]
)
NOW = 1_700_000_000_000
AGENT = "did:mesh:stored"


def lived_state() -> AgentState:
    """A state with every field in use: signals, windows, history, revocation, reinstatement."""
    state = AgentState()
    for offset in range(6):
        apply_signal(
            AGENT,
            state,
            SignalTrigger(offset % 5, 0, offset, f"s{offset}"),
            0.0 if offset < 3 else 0.9,
            NOW + offset,
            NOW + offset,
            NOW,
            WINDOWS,
            CONFIG,
            source="ids",
        )
    # Stamped a minute later, critical: its arrival closes the first window (and is recorded
    # as what closed it) before it is judged.
    minute = NOW + 60_000
    apply_signal(
        AGENT, state, SignalTrigger(1, 0, 7), 0.2, minute, minute, NOW, WINDOWS, CONFIG, "ids"
    )
    apply_reinstatement(AGENT, state, 3, NOW + 61_000, "secops", "reviewed", "r-1")
    later = NOW + 62_000  # a signal in a window (60-70 s) still open
    apply_signal(
        AGENT, state, SignalTrigger(1, 0, 9), 0.9, later, later, later, WINDOWS, CONFIG, "ids"
    )
    # Stamped after that window's end, within grace: the window keeps the dimension's score as
    # it was at its end.
    stamp = NOW + 70_500
    apply_signal(
        AGENT, state, SignalTrigger(2, 0, 10), 0.8, stamp, stamp, later, WINDOWS, CONFIG, "ids"
    )
    return state


LIVED = lived_state()
#: The lived state's fields, without the CRC that ends a record.
LIVED_FIELDS: list[Any] = orjson.loads(encode_state(LIVED))[:-1]


def sealed(fields: list[Any]) -> bytes:
    """A record of ``fields`` with the CRC a worker would have written after them."""
    unsealed = orjson.dumps(fields)[:-1]
    return b"%b,%d]" % (unsealed, zlib.crc32(unsealed))


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=25,
)


def decodes_or_refuses(data: bytes) -> AgentState | None:
    """Decode ``data``; a decoded state must survive every transition and encode again."""
    try:
        state = decode_state(data)
    except StateFormatError:
        event("refused")
        return None
    event("decoded")
    exercise(state)
    return state


def exercise(state: AgentState) -> None:
    state.dimension_scores()
    apply_signal(
        AGENT,
        state,
        SignalTrigger(3, 0, state.applied_offsets[3] + 1),
        0.0,
        NOW,
        NOW,
        NOW,
        WINDOWS,
        CONFIG,
    )
    close_windows(AGENT, state, NOW + 10**9, state.last_close_tick + 1, WINDOWS, CONFIG)
    reinstate(state)
    apply_signal(
        AGENT,
        state,
        SignalTrigger(0, 0, state.applied_offsets[0] + 1),
        0.1,
        NOW,
        NOW,
        NOW,
        WINDOWS,
        CONFIG,
    )
    written = encode_state(state)
    try:
        again = decode_state(written)
    except StateFormatError:
        # Only a counter that was decoded at the very edge of 64 bits and then incremented.
        return
    assert encode_state(again) == written


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=400))
def test_any_bytes_decode_or_are_refused(data: bytes) -> None:
    decodes_or_refuses(data)


@settings(max_examples=500, deadline=None)
@given(value=json_values)
def test_any_json_value_decodes_or_is_refused(value: Any) -> None:
    decodes_or_refuses(orjson.dumps(value))


small_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=5),
    max_leaves=6,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    version=st.sampled_from([1, 2]),
    fields=st.lists(small_json_values, min_size=16, max_size=18),
)
def test_any_fields_under_a_known_version_decode_or_are_refused(
    version: int, fields: list[Any]
) -> None:
    decodes_or_refuses(orjson.dumps([version, *fields]))


def paths(value: Any, prefix: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    """Every position inside nested lists."""
    found = [prefix] if prefix else []
    if isinstance(value, list):
        for i, item in enumerate(value):
            found += paths(item, (*prefix, i))
    return found


LIVED_PATHS = paths(LIVED_FIELDS)


def replaced(value: Any, path: tuple[int, ...], new: Any) -> Any:
    if not path:
        return new
    copy = list(value)
    copy[path[0]] = replaced(value[path[0]], path[1:], new)
    return copy


def at(value: Any, path: tuple[int, ...]) -> Any:
    for i in path:
        value = value[i]
    return value


def kin(value: Any) -> st.SearchStrategy[Any]:
    """Values of the same JSON kind as ``value``, edges included: the damage that gets furthest."""
    if isinstance(value, bool):
        return st.booleans() | st.sampled_from([0, 1])
    if isinstance(value, int):
        edges = [0, -1, 1, 2**63 - 1, 2**63, 2**64 - 1, -(2**63)]
        return st.sampled_from(edges) | st.integers(-(2**63), 2**64 - 1) | st.floats(-1, 2)
    if isinstance(value, float):
        return st.floats(allow_nan=False) | st.sampled_from([-0.0, 1.0000001, 100.0001, 1e308])
    if isinstance(value, str):
        return st.text(max_size=10)
    if isinstance(value, list):
        element = kin(value[0]) if value else json_values
        return st.lists(element, max_size=len(value) + 2)
    return json_values


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_state_with_any_one_part_replaced_decodes_or_is_refused(data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(LIVED_PATHS[1:]))  # [0] is the version: covered above
    new = data.draw(json_values | kin(at(LIVED_FIELDS, path)))
    decodes_or_refuses(sealed(replaced(LIVED_FIELDS, path, new)))


@settings(max_examples=300, deadline=None)
@given(path=st.sampled_from(LIVED_PATHS))
def test_a_state_with_any_one_part_removed_decodes_or_is_refused(path: tuple[int, ...]) -> None:
    parent = path[:-1]
    inner = at(LIVED_FIELDS, parent)
    shorter = [v for i, v in enumerate(inner) if i != path[-1]]
    decodes_or_refuses(sealed(replaced(LIVED_FIELDS, parent, shorter)))


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ((1, 0, 0), "0.5"),  # a recent value that is not a number
        ((1, 0, 0), 1e308),  # one that would overflow the score
        ((1, 0, 0), [0.5]),
        ((2, 1), 1.5),  # a lifetime count that is not an integer
        ((2, 1), 2**64 - 1),  # one that cannot be incremented and written again
        ((2,), [0, 0, 0, 0]),  # four dimensions
        ((4, 0, 1), [0, 0, 0, 0, 0, 0]),
        ((7, 0), "1700000000000"),
        ((8,), 0),  # revoked must be a boolean
        ((16, 0, 0), 7),  # an explained signal of no dimension
        ((16, 0, 1), -0.5),
        ((17, 0), 101.0),  # an accepted dimension score out of range
        ((18,), None),
        ((4, 0, 3, 2, 0), 100.5),  # a dimension's score at a window's end out of range
        ((4, 0, 3, 2, 1), -1),  # and its count
        ((4, 0, 3, 2), 50.0),
        ((4, 0, 3), [None] * 5),  # scores at the end, none known
        ((4, 0, 3), [[50.0, 1]] * 4),
        ((19,), [5, 1]),  # closed by a signal of no dimension
        ((19, 1), -1),
        ((20,), [1]),  # open windows' starts that disagree with the windows
        ((20, 0), 1),
        ((21,), LIVED.last_close_tick + 1),  # the closing tick repeated, not the same
        ((21,), "1"),
    ],
)
def test_damaged_fields_are_refused(path: tuple[int, ...], value: Any) -> None:
    with pytest.raises(StateFormatError, match="damaged"):
        decode_state(sealed(replaced(LIVED_FIELDS, path, value)))


def test_the_lived_state_has_every_field_in_use() -> None:
    assert LIVED.reinstatement is not None and LIVED.revocation is not None
    assert LIVED.reinstated_at_score is not None and LIVED.reinstated_dimension_scores
    assert LIVED.last_signal_at_ms == NOW + 70_500 and LIVED.history and LIVED.recent_signals
    assert LIVED.open_windows and LIVED.last_updates
    assert any(tally.ends for tally in LIVED.open_windows.values())
    assert LIVED.last_close_signal == (1, 7)
    assert decode_state(encode_state(LIVED)) == LIVED
    assert FORMAT_VERSION == 4 and len(LIVED_FIELDS) == 22
    assert sealed_schedule(encode_state(LIVED)) == (
        sorted(LIVED.open_windows),
        LIVED.last_close_tick,
    )


def test_the_schedule_is_read_without_decoding_only_from_an_intact_current_record() -> None:
    assert sealed_schedule(encode_state(AgentState())) == ([], -1)
    assert sealed_schedule(format_3(LIVED)) is None  # older formats: decoded instead
    assert sealed_schedule(format_2(LIVED)) is None
    assert sealed_schedule(b"[4,1,2,[1,x],3,4]") is None
    assert sealed_schedule(b"not a state") is None
    assert sealed_schedule(sealed([4, [1, "x"], 3])) is None


def test_a_change_to_any_byte_of_a_record_is_found_by_its_crc() -> None:
    record = encode_state(LIVED)
    for at in range(len(record)):
        for flip in (1, 0x20):
            damaged = bytearray(record)
            damaged[at] ^= flip
            assert sealed_schedule(bytes(damaged)) is None, at
            with pytest.raises(StateFormatError):
                decode_state(bytes(damaged))


def format_3(state: AgentState) -> bytes:
    """The record release 3 wrote: the current fields without the repeated tick and the CRC."""
    return orjson.dumps([3, *fields_of(state)[1:21]])


def fields_of(state: AgentState) -> list[Any]:
    return orjson.loads(encode_state(state))


def test_a_format_3_record_decodes_to_the_same_state() -> None:
    assert decode_state(format_3(LIVED)) == LIVED


def format_2(state: AgentState) -> bytes:
    """The record release 2 wrote: the current fields without the two format 3 added, and
    windows without their scores at the end."""
    fields = orjson.loads(encode_state(state))
    fields[4] = [window[:3] for window in fields[4]]
    return orjson.dumps([2, *fields[1:19]])


def test_a_format_2_record_decodes_with_the_new_fields_unknown() -> None:
    assert decode_state(format_2(LIVED)) == with_format_3_fields_unknown(LIVED)


def with_format_3_fields_unknown(state: AgentState) -> AgentState:
    state = copy.deepcopy(state)
    state.last_close_signal = None
    for tally in state.open_windows.values():
        tally.ends = None
    return state


def format_1(state: AgentState) -> bytes:
    """The record release 1 wrote: the current fields without those formats 2 and 3 added."""
    return orjson.dumps([1, *orjson.loads(format_2(state))[1:17]])


def test_a_format_1_record_decodes_with_the_new_fields_unknown() -> None:
    state = lived_state()
    state.reinstated_at_score = None
    state.reinstated_dimension_scores = None
    decoded = decode_state(format_1(state))
    assert decoded.last_signal_at_ms == 0
    assert decoded.reinstated_dimension_scores is None
    decoded.last_signal_at_ms = state.last_signal_at_ms
    assert decoded == with_format_3_fields_unknown(state)


def test_a_format_1_reinstated_state_accepts_its_dimensions_as_stored() -> None:
    # Release 1 kept only the accepted total; the dimensions are taken as they are, so a floor
    # does not revoke the agent again at its next recalculation.
    decoded = decode_state(format_1(LIVED))
    assert decoded.reinstated_at_score == LIVED.reinstated_at_score
    assert decoded.reinstated_dimension_scores == LIVED.dimension_scores()
    outcome = close_windows(AGENT, decoded, NOW + 10**9, 99, WINDOWS, CONFIG)
    assert outcome.revocation is None and not decoded.revoked
