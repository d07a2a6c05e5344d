"""The agent state machine (streams/scoring/agent.py) and its stored form (codec.py).

Exactly-once effects over redelivery, revocation once, late and future-stamped signals, window
closing and score-update chaining, reinstatement, and a lossless state encoding.
"""

from __future__ import annotations

import copy
import uuid

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.scoring.agent import (
    AgentState,
    Reinstatement,
    Revocation,
    ScoreUpdate,
    SignalTrigger,
    WindowTally,
    WindowTrigger,
    apply_signal,
    close_windows,
    reinstate,
    revocation_id,
)
from streams.scoring.codec import FORMAT_VERSION, StateFormatError, decode_state, encode_state
from streams.scoring.explained import explained_entry
from streams.scoring.model import DEFAULT_WEIGHTS, ScoringConfig
from streams.scoring.windows import WindowPolicy

AGENT = "did:mesh:agent-1"
SIZE, GRACE = 10_000, 2_000
WINDOWS = WindowPolicy(size_ms=SIZE, grace_ms=GRACE)
CONFIG = ScoringConfig.validated(DEFAULT_WEIGHTS, version=3)
T0 = 1_700_000_000_000 - 1_700_000_000_000 % SIZE  # a window start

POLICY, RESOURCE, OUTPUT, SECURITY, COLLAB = range(5)


def signal(
    state: AgentState,
    dimension: int,
    offset: int,
    value: float,
    *,
    at: int = T0,
    stamped: int | None = None,
    clock: int = T0,
    config: ScoringConfig = CONFIG,
    agent: str = AGENT,
    partition: int = 0,
):
    trigger = SignalTrigger(dimension, partition, offset, f"s-{dimension}-{offset}")
    return apply_signal(
        agent, state, trigger, value, at if stamped is None else stamped, at, clock, WINDOWS, config
    )


def close(state: AgentState, clock: int, tick: int = 1, config: ScoringConfig = CONFIG):
    return close_windows(AGENT, state, clock, tick, WINDOWS, config)


# ------------------------------------------------------------------------------ redelivery


def test_duplicate_offset_is_skipped_and_changes_nothing() -> None:
    state = AgentState()
    assert signal(state, POLICY, 5, 0.9).applied
    assert signal(state, POLICY, 6, 0.1).applied  # critical: recalculated
    before = copy.deepcopy(state)

    for offset, value in ((6, 0.0), (5, 0.0), (0, 1.0)):
        outcome = signal(state, POLICY, offset, value, at=T0 + 500)
        assert outcome == type(outcome)(applied=False)
        assert state == before

    # Offsets are per signal topic: the same offset on another dimension is a different record.
    assert signal(state, OUTPUT, 6, 0.9).applied
    assert state.lifetime == [2, 0, 1, 0, 0]


def test_redelivered_revocation_trigger_republishes_the_identical_revocation() -> None:
    state = AgentState()
    signal(state, POLICY, 0, 0.0)
    first = signal(state, SECURITY, 7, 0.0, at=T0 + 100)  # 250: revoked
    assert first.revocation is not None
    snapshot = copy.deepcopy(state)

    again = signal(state, SECURITY, 7, 0.0, at=T0 + 99_999)
    assert not again.applied
    assert again.revocation is None
    assert again.republish == first.revocation
    assert again.republish.revoked_at_ms == T0 + 100  # the original, not re-stamped
    assert state == snapshot

    # Redelivery of a signal that did not cause the revocation republishes nothing.
    assert signal(state, POLICY, 0, 0.0).republish is None
    # Same offset on another partition is not the trigger record.
    other = signal(state, SECURITY, 7, 0.0, partition=1)
    assert other.republish is None and not other.applied


# ------------------------------------------------------------------------------ revocation


def test_critical_signal_revokes_once_with_the_seeds_reason() -> None:
    state = AgentState()
    assert signal(state, POLICY, 0, 0.0).revocation is None  # 375
    outcome = signal(state, SECURITY, 0, 0.0, at=T0 + 42)  # 10 * (0+7.5+10+0+7.5) = 250
    r = outcome.revocation
    assert r is not None
    assert (r.total_score, r.threshold, r.reason) == (250, 300, "Trust score 250 below threshold")
    assert r.revoked_at_ms == T0 + 42
    assert r.trigger == SignalTrigger(SECURITY, 0, 0, f"s-{SECURITY}-0")
    assert r.revocation_id == revocation_id(AGENT, 1)
    assert r.weights_version == 3
    assert r.dimension_scores == (0.0, 50.0, 50.0, 0.0, 50.0)
    assert (state.revoked, state.revocation_count, state.score) == (True, 1, 250)


def test_later_critical_signals_are_applied_but_do_not_revoke_again() -> None:
    state = AgentState()
    signal(state, POLICY, 0, 0.0)
    first = signal(state, SECURITY, 0, 0.0).revocation
    outcome = signal(state, OUTPUT, 0, 0.0, at=T0 + 5)  # 10 * (7.5 + 7.5) = 150
    assert outcome.applied and outcome.revocation is None
    assert state.score == 150
    assert state.history[-1] == (T0 + 5, 150)
    assert (state.revocation_count, state.revocation) == (1, first)
    # ... and a window close below threshold does not revoke again either.
    assert close(state, T0 + SIZE + GRACE).revocation is None
    assert state.revocation_count == 1


def test_score_equal_to_the_threshold_does_not_revoke() -> None:
    at_375 = ScoringConfig.validated(DEFAULT_WEIGHTS, revocation_threshold=375)
    state = AgentState()
    assert signal(state, POLICY, 0, 0.0, config=at_375).revocation is None
    assert state.score == 375 and not state.revoked
    at_376 = ScoringConfig.validated(DEFAULT_WEIGHTS, revocation_threshold=376)
    assert signal(AgentState(), POLICY, 0, 0.0, config=at_376).revocation is not None


def test_non_critical_signals_wait_for_the_window_close() -> None:
    strict = ScoringConfig.validated(DEFAULT_WEIGHTS, 600, 700, version=1)
    state = AgentState()
    outcome = signal(state, OUTPUT, 0, 0.5, config=strict)  # 0.5 is not critical
    assert outcome.revocation is None and state.history == [] and state.score == 500
    closed = close(state, T0 + SIZE + GRACE, config=strict)
    assert [u.total_score for u in closed.updates] == [500]
    r = closed.revocation
    assert r is not None
    assert r.trigger == WindowTrigger(T0)
    assert r.reason == "Trust score 500 below threshold"
    assert closed.updates[0].revoked is True
    assert closed.updates[0].at_risk is False  # a revoked agent is not "at risk"


def test_revocation_id_is_deterministic() -> None:
    a1 = revocation_id(AGENT, 1)
    assert a1 == revocation_id(AGENT, 1)
    assert uuid.UUID(a1).version == 5
    assert len({a1, revocation_id(AGENT, 2), revocation_id("did:mesh:agent-2", 1)}) == 3
    # The same history replayed on a fresh state (another worker) yields the same id.
    ids = []
    for _ in range(2):
        state = AgentState()
        signal(state, POLICY, 0, 0.0)
        ids.append(signal(state, SECURITY, 0, 0.0).revocation.revocation_id)
    assert ids == [a1, a1]


def test_reinstate_lifts_the_revocation_and_a_new_breach_revokes_anew() -> None:
    state = AgentState()
    assert reinstate(state) is False
    assert state == AgentState()

    signal(state, POLICY, 0, 0.0)
    signal(state, SECURITY, 0, 0.0)
    assert reinstate(state) is True
    assert not state.revoked
    assert reinstate(state) is False

    # Not revoked -> at risk again while below the warning threshold.
    assert state.is_at_risk(CONFIG)
    # The operator accepted its level (250): staying there does not revoke it...
    assert signal(state, SECURITY, 1, 0.0, at=T0 + 8).revocation is None
    assert state.score == 250 and not state.revoked
    # ...a fall below it does.
    second = signal(state, OUTPUT, 0, 0.0, at=T0 + 9).revocation
    assert second is not None and second.total_score == 150
    assert second.revocation_id == revocation_id(AGENT, 2)
    assert state.revocation_count == 2 and state.revoked


# ------------------------------------------------------------------------- windows and time


def test_late_signal_is_applied_and_counted_in_the_open_window() -> None:
    state = AgentState()
    clock = T0 + 3 * SIZE + 500  # windows T0 .. T0 + SIZE are closed; T0 + 2 * SIZE is in grace
    outcome = signal(state, OUTPUT, 0, 0.9, at=clock + 100, stamped=T0 + 5_000, clock=clock)
    assert outcome.applied
    assert state.recent[OUTPUT] == [0.9] and state.lifetime[OUTPUT] == 1
    assert state.open_windows == {T0 + 3 * SIZE: WindowTally([0, 0, 0, 0, 0], 1)}

    update = close(state, T0 + 4 * SIZE + GRACE).updates
    assert len(update) == 1
    assert update[0].window_start_ms == T0 + 3 * SIZE
    assert (update[0].late_signals, update[0].window_counts) == (1, (0, 0, 0, 0, 0))
    assert update[0].lifetime_counts == (0, 0, 1, 0, 0)
    assert update[0].dimension_scores[OUTPUT] == pytest.approx(90.0)


def test_signal_within_grace_still_counts_in_its_own_window() -> None:
    state = AgentState()
    clock = T0 + SIZE + GRACE - 1  # window T0 is over but still in its grace period
    signal(state, POLICY, 0, 0.8, at=clock, stamped=T0 + 9_999, clock=clock)
    assert state.open_windows == {T0: WindowTally([1, 0, 0, 0, 0], 0)}
    # From end + grace on, the same stamp is late.
    clock += 1
    signal(state, POLICY, 1, 0.8, at=clock, stamped=T0 + 9_999, clock=clock)
    assert state.open_windows[T0 + SIZE] == WindowTally([0, 0, 0, 0, 0], 1)


def test_signal_stamped_beyond_grace_in_the_future_goes_to_the_current_window() -> None:
    state = AgentState()
    now = T0 + 8_000
    signal(state, POLICY, 0, 0.8, at=now, stamped=now + GRACE + 1)  # beyond grace: now's window
    signal(state, RESOURCE, 0, 0.8, at=now, stamped=now + GRACE)  # within grace: its own window
    signal(state, OUTPUT, 0, 0.8, at=now, stamped=now + 10 * SIZE)
    assert state.open_windows == {
        # The resource signal is stamped after T0's window ends: that window keeps the
        # dimension's score as it was at its end (neutral).
        T0: WindowTally([1, 0, 1, 0, 0], 0, [None, [50.0, 0], None, None, None]),
        T0 + SIZE: WindowTally([0, 1, 0, 0, 0], 0),
    }


def test_close_windows_emits_one_update_per_due_window_and_chains_previous_score() -> None:
    state = AgentState()
    signal(state, POLICY, 0, 0.9, at=T0 + 1)
    signal(state, POLICY, 1, 0.9, at=T0 + 2)
    signal(state, OUTPUT, 0, 0.5, at=T0 + 3)
    signal(state, SECURITY, 0, 0.8, at=T0 + SIZE + 1)  # next window

    assert close(state, T0 + SIZE + GRACE - 1).updates == ()  # not yet due
    assert state.history == [] and len(state.open_windows) == 2

    first = close(state, T0 + SIZE + GRACE, tick=7).updates
    assert len(first) == 1
    u = first[0]
    assert isinstance(u, ScoreUpdate)
    # The score as of the window's end: policy 90, output 50, and security still neutral (its
    # signal is stamped after the end), others 50: 10 * (22.5 + 7.5 + 10 + 12.5 + 7.5) = 600
    assert u.total_score == 600
    assert (u.window_start_ms, u.window_end_ms) == (T0, T0 + SIZE)
    assert u.previous_score == 500
    assert u.window_counts == (2, 0, 1, 0, 0)
    assert u.signals_in_window == 3
    assert u.lifetime_counts == (2, 0, 1, 0, 0)  # as of the end: not the later security signal
    assert (u.late_signals, u.weights_version, u.computed_at_ms) == (0, 3, T0 + SIZE + GRACE)
    assert (u.revoked, u.at_risk) == (False, False)
    assert state.last_close_tick == 7 and state.last_updates == first
    assert list(state.open_windows) == [T0 + SIZE]

    # The same clock again: nothing more to close, no recalculation.
    assert close(state, T0 + SIZE + GRACE, tick=8).updates == ()
    assert state.history == [(T0 + SIZE, 600)]  # taken at the window's end

    # Critical: security becomes 100 * 0.8 / 2.01 = 39.80, total 10 * (22.5 + 7.5 + 10 + 9.95
    # + 7.5) = 574.5 -> 574, recalculated at once and again when its window closes.
    signal(state, SECURITY, 1, 0.0, at=T0 + SIZE + 5_000, clock=T0 + SIZE + GRACE)
    assert state.history == [(T0 + SIZE, 600), (T0 + SIZE + 5_000, 574)]
    second = close(state, T0 + 2 * SIZE + GRACE, tick=9).updates
    assert len(second) == 1
    assert (second[0].total_score, second[0].previous_score) == (574, 600)
    assert second[0].window_counts == (0, 0, 0, 2, 0)
    assert state.history[-1] == (T0 + 2 * SIZE, 574)


def test_several_due_windows_close_together_each_once() -> None:
    state = AgentState()
    for k in range(3):
        # Stream time stays at T0. The first window is due at T0 + SIZE + GRACE, before the
        # third signal: an ordinary signal leaves it to the next tick's close.
        assert signal(state, COLLAB, k, 1.0, at=T0 + k * SIZE).closed is None
    assert state.last_close_signal is None
    # A critical one closes what is due before it is judged, and records that it did.
    outcome = signal(state, POLICY, 0, 0.0, at=T0 + 2 * SIZE + 1)
    assert outcome.closed is not None
    first = outcome.closed.updates
    assert [u.window_start_ms for u in first] == [T0]
    assert state.last_close_signal == (0, 0) and state.last_close_tick == -1
    updates = first + close(state, T0 + 5 * SIZE).updates
    assert [u.window_start_ms for u in updates] == [T0, T0 + SIZE, T0 + 2 * SIZE]
    assert [u.window_counts for u in updates] == [(0, 0, 0, 0, 1), (0, 0, 0, 0, 1), (1, 0, 0, 0, 1)]
    # Each window's score and counts as of its end: one, two, then three collaboration
    # signals of 1.0 (the last window with the critical policy signal: 10 * (0 + 7.5 + 10 +
    # 12.5 + 15) = 450).
    assert [u.total_score for u in updates] == [575, 575, 450]
    assert [u.lifetime_counts for u in updates] == [
        (0, 0, 0, 0, 1),
        (0, 0, 0, 0, 2),
        (1, 0, 0, 0, 3),
    ]
    assert [u.previous_score for u in updates] == [500, 575, 575]
    assert state.open_windows == {}
    assert close(state, T0 + 50 * SIZE).updates == ()


def test_an_agent_without_signals_in_a_window_gets_no_update() -> None:
    state = AgentState()
    assert close(state, T0 + 100 * SIZE).updates == ()
    assert state == AgentState()


# ---------------------------------------------------------------------------------- codec

finite_unit = st.floats(0.0, 1.0, allow_nan=False)
scores_0_100 = st.floats(0.0, 100.0, allow_nan=False)
small = st.integers(0, 10**13)
five_counts = st.lists(st.integers(0, 10**6), min_size=5, max_size=5)

signal_triggers = st.builds(
    SignalTrigger,
    st.integers(0, 4),
    st.integers(0, 500),
    small,
    st.one_of(st.none(), st.text(max_size=20)),
)
revocations = st.builds(
    Revocation,
    st.uuids().map(str),
    small,
    st.integers(0, 1000),
    st.integers(0, 1000),
    st.text(max_size=40),
    st.tuples(*[scores_0_100] * 5),
    st.one_of(signal_triggers, st.builds(WindowTrigger, small)),
    st.integers(0, 1000),
)
updates = st.builds(
    ScoreUpdate,
    small,
    small,
    st.integers(0, 1000),
    st.integers(0, 1000),
    st.tuples(*[scores_0_100] * 5),
    st.tuples(*[st.integers(0, 10**6)] * 5),
    st.tuples(*[st.integers(0, 10**6)] * 5),
    st.integers(0, 10**6),
    st.integers(0, 1000),
    small,
    st.booleans(),
    st.booleans(),
)
reinstatements = st.builds(
    Reinstatement,
    st.uuids().map(str),
    small,
    st.uuids().map(str),
    st.text(max_size=20),
    st.text(max_size=40),
    st.one_of(st.none(), st.text(max_size=20)),
    st.integers(0, 10**9),
)
states = st.builds(
    AgentState,
    recent=st.lists(st.lists(finite_unit, max_size=100), min_size=5, max_size=5),
    lifetime=five_counts,
    applied_offsets=st.lists(st.integers(-1, 10**12), min_size=5, max_size=5),
    open_windows=st.dictionaries(
        small, st.builds(WindowTally, five_counts, st.integers(0, 1000)), max_size=4
    ),
    score=st.integers(0, 1000),
    published_score=st.integers(0, 1000),
    history=st.lists(st.tuples(small, st.integers(0, 1000)), max_size=100),
    revoked=st.booleans(),
    revocation_count=st.integers(0, 50),
    revocation=st.one_of(st.none(), revocations),
    last_close_tick=st.integers(-1, 10**9),
    last_updates=st.lists(updates, max_size=3).map(tuple),
    applied_command_offset=st.integers(-1, 10**9),
    reinstatement=st.one_of(st.none(), reinstatements),
    reinstated_at_score=st.one_of(st.none(), st.integers(0, 1000)),
    reinstated_dimension_scores=st.one_of(
        st.none(), st.tuples(*[st.one_of(st.none(), scores_0_100)] * 5)
    ),
    recent_signals=st.lists(
        st.builds(explained_entry, st.integers(0, 4), finite_unit, st.text(max_size=20), small),
        max_size=10,
    ),
    last_signal_at_ms=small,
)


@settings(max_examples=300, deadline=None)
@given(state=states)
def test_codec_round_trips_any_state(state: AgentState) -> None:
    decoded = decode_state(encode_state(state))
    assert decoded == state
    # Scores recomputed from decoded state are bit-identical.
    assert decoded.dimension_scores() == state.dimension_scores()
    assert encode_state(decoded) == encode_state(state)


def test_codec_round_trips_a_state_built_by_real_transitions() -> None:
    state = AgentState()
    signal(state, POLICY, 0, 0.0)
    signal(state, SECURITY, 3, 0.1 + 0.2)  # a float that needs all 17 digits
    signal(state, SECURITY, 4, 0.0)
    signal(state, OUTPUT, 0, 0.7, at=T0 + SIZE)
    close(state, T0 + SIZE + GRACE, tick=4)
    decoded = decode_state(encode_state(state))
    assert decoded == state
    # The decoded state keeps recognising redeliveries and republishing the revocation.
    again = signal(decoded, SECURITY, 4, 0.0)
    assert again.republish == state.revocation


def written_afresh(state: AgentState) -> bytes:
    """``state`` encoded with nothing reused from an earlier encoding."""
    fresh = copy.copy(state)
    fresh.recent_written = [None] * (2 * len(state.recent))
    fresh.history_written = None
    return encode_state(fresh)


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(("signal", "close", "encode")),
            st.integers(0, 4),
            st.sampled_from((0.0, 0.3, 0.5, 0.1 + 0.2, 1.0)),
            st.integers(0, 3),
        ),
        max_size=300,
    )
)
def test_an_encoding_that_reuses_earlier_ones_equals_one_written_afresh(
    steps: list[tuple[str, int, float, int]],
) -> None:
    """Signals, window closes and encodings in any order: parts kept from an earlier encoding
    are reused only while unchanged, also once a dimension's values are at their bound (100)
    and each signal drops the oldest."""
    state = AgentState()
    offsets = [0] * 5
    clock = T0
    for _ in range(100):
        offsets[POLICY] += 1
        signal(state, POLICY, offsets[POLICY], 0.5, at=clock, clock=clock)
    encode_state(state)
    for action, dimension, value, windows_on in steps:
        if action == "signal":
            offsets[dimension] += 1
            signal(state, dimension, offsets[dimension], value, at=clock, clock=clock)
        elif action == "close":
            clock += windows_on * SIZE
            close(state, clock + GRACE, tick=clock)
        assert encode_state(state) == written_afresh(state)


def test_a_list_replaced_after_an_encoding_is_written_afresh() -> None:
    state = AgentState()
    signal(state, POLICY, 0, 0.5)
    close(state, T0 + SIZE + GRACE)
    encode_state(state)
    state.recent = [[0.25] * 3 for _ in range(5)]
    state.history = [(T0, 400)]
    assert encode_state(state) == written_afresh(state)
    assert decode_state(encode_state(state)).recent == state.recent


@pytest.mark.parametrize("version", [FORMAT_VERSION + 1, 0, "1", None])
def test_unknown_format_version_is_refused(version: object) -> None:
    raw = orjson.loads(encode_state(AgentState()))
    raw[0] = version
    with pytest.raises(StateFormatError, match="format"):
        decode_state(orjson.dumps(raw))


@pytest.mark.parametrize("data", [b"", b"not json", b"{}", b"[]", b"42"])
def test_bytes_that_are_not_a_state_record_are_refused(data: bytes) -> None:
    with pytest.raises(StateFormatError):
        decode_state(data)


def test_a_truncated_current_format_record_is_refused_as_a_format_error() -> None:
    # StateFormatError's own promise: state written "by a newer or a broken release" fails with it,
    # so the operator reads what is wrong instead of an unpacking error from deep in the decoder.
    whole = orjson.loads(encode_state(AgentState()))
    with pytest.raises(StateFormatError):
        decode_state(orjson.dumps(whole[:3]))
