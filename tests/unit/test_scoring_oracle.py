"""The pure scoring code agrees with the independent oracle (tests/oracle.py) to the integer.

Property tests drive thousands of random signal sequences through ``streams.scoring.formulas`` and
through the agent state machine (``apply_signal`` / ``close_windows`` / ``reinstate``) and compare
every total, dimension score, history entry and revocation with the oracle. Worked examples with
hand-computed numbers pin the arithmetic independently of both.
"""

from __future__ import annotations

import copy
import itertools
import math

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from streams.scoring import formulas
from streams.scoring.agent import (
    AgentState,
    CloseOutcome,
    SignalTrigger,
    WindowTrigger,
    apply_signal,
    close_windows,
    reinstate,
    revocation_id,
)
from streams.scoring.model import (
    DEFAULT_WEIGHTS,
    DIMENSIONS,
    DimensionFloor,
    ScoringConfig,
    config_problems,
    tier_for,
)
from streams.scoring.windows import WindowPolicy
from tests import oracle

DIMS = oracle.DIMENSIONS
AGENT = "did:mesh:agent-under-test"
SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]

# ---------------------------------------------------------------------------------- strategies

EDGE_VALUES = (
    0.0,
    1.0,
    0.3,
    0.29999,
    math.nextafter(0.3, 0.0),
    math.nextafter(0.3, 1.0),
    5e-324,
    math.nextafter(1.0, 0.0),
    0.5,
    0.1,
    0.7,
    1 / 3,
)
signal_values = st.one_of(
    st.sampled_from(EDGE_VALUES), st.floats(0.0, 1.0, allow_nan=False, allow_infinity=False)
)


@st.composite
def valid_weights(draw: st.DrawFn) -> tuple[float, ...]:
    """Weights the service itself accepts (they pass ``config_problems``), of several shapes."""
    shape = draw(st.sampled_from(["default", "grid", "normalised", "perturbed", "one-hot"]))
    if shape == "default":
        weights: list[float] = list(DEFAULT_WEIGHTS)
    elif shape == "one-hot":
        weights = [0.0] * 5
        weights[draw(st.integers(0, 4))] = 1.0
    else:
        cuts = sorted(draw(st.lists(st.integers(0, 1000), min_size=4, max_size=4)))
        bounds = [0, *cuts, 1000]
        weights = [(b - a) / 1000 for a, b in itertools.pairwise(bounds)]
        if shape == "normalised":
            raw = draw(st.lists(st.floats(0.0, 1.0), min_size=5, max_size=5))
            total = 0.0
            for x in raw:
                total += x
            assume(total > 0.01)
            weights = [x / total for x in raw]
        elif shape == "perturbed":  # sums that are off 1.0 by up to (almost) the tolerance
            deltas = draw(st.lists(st.floats(-0.00019, 0.00019), min_size=5, max_size=5))
            weights = [min(1.0, max(0.0, w + d)) for w, d in zip(weights, deltas, strict=True)]
    assume(not config_problems(weights, 300, 500))
    return tuple(weights)


def value_from(raw: bytes) -> float:
    """A signal value from 7 random bytes: an edge value one time in four, else anything in
    [0, 1] (both ends included) at 2**-56 resolution."""
    if raw[0] < 64:
        return EDGE_VALUES[raw[0] % len(EDGE_VALUES)]
    return int.from_bytes(raw, "big") % (2**56 + 1) / 2**56


# Long sequences are decoded from one random byte string: drawing 400 signals value by value costs
# hypothesis ~30 ms per example, decoding bytes costs almost nothing and still shrinks.
SIGNAL_BYTES = 8


@st.composite
def signal_sequences(draw: st.DrawFn) -> list[tuple[int, float]]:
    """0..400 (dimension index, value) signals; often crowded into one or two dimensions so the
    per-dimension cap of 100 is crossed."""
    n = draw(st.integers(0, 400))
    favourites = draw(st.sampled_from([(0, 1, 2, 3, 4), (0,), (2,), (4,), (1, 3), (0, 3)]))
    raw = draw(st.binary(min_size=n * SIGNAL_BYTES, max_size=n * SIGNAL_BYTES))
    return [
        (favourites[raw[i] % len(favourites)], value_from(raw[i + 1 : i + SIGNAL_BYTES]))
        for i in range(0, len(raw), SIGNAL_BYTES)
    ]


def per_dimension(signals: list[tuple[int, float]]) -> list[list[float]]:
    values: list[list[float]] = [[] for _ in DIMENSIONS]
    for d, v in signals:
        values[d].append(v)
    return values


# ------------------------------------------------------------------ formulas against the oracle


# Passing runs take seconds. On a failure hypothesis may shrink for up to 300 s; let it report the
# minimal counterexample instead of being cut off by the suite's 300 s default timeout.
@pytest.mark.timeout(900)
@settings(max_examples=3000, deadline=None, suppress_health_check=SLOW_OK)
@given(signals=signal_sequences(), weights=valid_weights())
def test_total_score_of_random_sequences_equals_oracle(
    signals: list[tuple[int, float]], weights: tuple[float, ...]
) -> None:
    buffers = per_dimension(signals)
    event(f"longest dimension {'> 100' if max(map(len, buffers)) > 100 else '<= 100'}")
    scores = tuple(formulas.dimension_score(values) for values in buffers)
    total = formulas.total_score(scores, weights)

    expected_total, expected_scores = oracle.score_signals(
        [(DIMS[d], v) for d, v in signals], weights
    )
    assert scores == tuple(expected_scores[d] for d in DIMS)
    assert total == expected_total
    assert 0 <= total <= 1000


@settings(max_examples=600, deadline=None)
@given(
    values=st.one_of(
        st.lists(signal_values, max_size=120), signal_sequences().map(lambda s: [v for _, v in s])
    )
)
def test_dimension_score_equals_oracle_bit_for_bit(values: list[float]) -> None:
    got = formulas.dimension_score(values)
    assert got == oracle.dimension_score(values)
    assert 0.0 <= got <= 100.0 + 1e-9


@settings(max_examples=400, deadline=None)
@given(weights=st.lists(st.floats(-0.01, 1.01, allow_nan=False), min_size=5, max_size=5))
def test_weight_validation_agrees_with_the_contract(weights: list[float]) -> None:
    assert (not config_problems(weights, 300, 500)) == oracle.weights_valid(weights)


@settings(max_examples=400, deadline=None)
@given(scores=st.lists(st.integers(0, 1000), max_size=30))
def test_trend_equals_oracle(scores: list[int]) -> None:
    assert formulas.trend(scores) == oracle.trend(scores)


@settings(max_examples=300, deadline=None)
@given(usage=st.tuples(*[st.integers(0, 10**7)] * 4))
def test_resource_efficiency_equals_oracle(usage: tuple[int, int, int, int]) -> None:
    value = formulas.resource_efficiency(*usage)
    assert value == oracle.resource_efficiency(*usage)
    assert 0.0 <= value <= 1.0


@given(total=st.integers(0, 1000))
def test_tier_equals_oracle(total: int) -> None:
    assert tier_for(total).value == oracle.tier(total)


# ------------------------------------------------------- the agent state machine against the oracle

SIZE_MS, GRACE_MS = 1_000, 300
WINDOWS = WindowPolicy(size_ms=SIZE_MS, grace_ms=GRACE_MS)
START_MS = 1_700_000_000_000

EVENT_BYTES = 13
Event = tuple[int, int, float, int, int]


def decode_events(raw: bytes) -> list[Event]:
    """(kind selector 0..19, dimension, value, ms the wall clock advances 0..700, skew -3000..1500)
    per 13 bytes."""
    return [
        (
            raw[i] % 20,
            raw[i + 1] % 5,
            value_from(raw[i + 2 : i + 9]),
            int.from_bytes(raw[i + 9 : i + 11], "big") % 701,
            int.from_bytes(raw[i + 11 : i + 13], "big") % 4501 - 3000,
        )
        for i in range(0, len(raw), EVENT_BYTES)
    ]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[ScoringConfig, list[Event]]:
    weights = draw(valid_weights())
    # Random values average a total near 500: thresholds around it make revocations common.
    revocation = draw(st.one_of(st.just(300), st.integers(0, 1000), st.integers(420, 580)))
    warning = draw(st.one_of(st.just(max(500, revocation)), st.integers(revocation, 1000)))
    # Floors on some dimensions in some scenarios, around the scores random values give (~50).
    floors = draw(
        st.one_of(
            st.just([None] * 5),
            st.lists(
                st.one_of(
                    st.none(),
                    st.builds(
                        DimensionFloor,
                        st.one_of(st.floats(0, 100), st.integers(20, 70).map(float)),
                        st.integers(1, 5),
                    ),
                ),
                min_size=5,
                max_size=5,
            ),
        )
    )
    config = ScoringConfig.validated(
        weights, revocation, warning, version=draw(st.integers(0, 9)), floors=floors
    )
    n = draw(st.integers(0, 400))
    return config, decode_events(
        draw(st.binary(min_size=n * EVENT_BYTES, max_size=n * EVENT_BYTES))
    )


class Window:
    """The test's own bookkeeping of one open window (independent of ``streams``)."""

    def __init__(self) -> None:
        self.counts = [0] * 5
        self.late = 0
        #: Each dimension's score and lifetime count when its first signal stamped at or after
        #: the window's end came (None: none yet, so they are now as they were at the end).
        self.ends: list[tuple[float, int] | None] = [None] * 5


def assert_same(state: AgentState, model: oracle.OracleAgent, scores: bool = False) -> None:
    assert state.score == model.total_score
    assert state.history == model.history
    if scores:  # costly: checked at the end (and by every window update on the way)
        assert state.dimension_scores() == tuple(model.dimension_scores()[d] for d in DIMS)
    assert state.lifetime == [model.lifetime_counts[d] for d in DIMS]
    assert state.revoked == model.revoked
    assert state.revocation_count == model.revocation_count
    if model.revocation_count:
        assert state.revocation is not None
        assert state.revocation.reason == model.revocation_reason
        assert state.revocation.revocation_id == revocation_id(AGENT, model.revocation_count)
    else:
        assert state.revocation is None
    # What the operator accepted at reinstatement, and what of it still holds.
    assert state.reinstated_at_score == model.accepted_total
    accepted = tuple(model.accepted_scores.get(d) for d in DIMS)
    assert (state.reinstated_dimension_scores or (None,) * 5) == accepted


# Passing runs take seconds. On a failure hypothesis may shrink for up to 300 s; let it report the
# minimal counterexample instead of being cut off by the suite's 300 s default timeout.
@pytest.mark.timeout(900)
@settings(max_examples=1000, deadline=None, suppress_health_check=SLOW_OK)
@given(scenario=scenarios())
def test_agent_state_machine_equals_oracle(
    scenario: tuple[ScoringConfig, list[Event]],
) -> None:
    config, script = scenario
    state = AgentState()
    model = oracle.OracleAgent(
        config.weights,
        config.revocation_threshold,
        config.warning_threshold,
        floors={
            d: (floor.floor, floor.min_signals)
            for d, floor in zip(DIMS, config.floors, strict=True)
            if floor is not None
        },
    )
    now = clock = START_MS
    last_offset = [-1] * 5
    tick_offset = 0
    published = oracle.NEW_AGENT_SCORE
    open_windows: dict[int, Window] = {}
    late_total = 0
    reinstated = 0
    #: The signal (dimension, offset) whose arrival last closed windows, if that was a signal.
    closed_by: tuple[int, int] | None = None

    def close_due(by: int, outcome: CloseOutcome | None) -> None:
        """Check the windows closed once stream time is ``by``, against the model's."""
        nonlocal published
        due = sorted(s for s in open_windows if by >= s + SIZE_MS + GRACE_MS)
        updates = () if outcome is None else outcome.updates
        assert [u.window_start_ms for u in updates] == due
        revoked_at_window = None
        for update in updates:
            window = open_windows.pop(update.window_start_ms)
            now_scores = model.dimension_scores()
            scores = {
                name: now_scores[name] if end is None else end[0]
                for name, end in zip(DIMS, window.ends, strict=True)
            }
            lifetime = tuple(
                model.lifetime_counts[name] if end is None else end[1]
                for name, end in zip(DIMS, window.ends, strict=True)
            )
            revocations_before = model.revocation_count
            total = model.recalculate(at=update.window_end_ms, scores=scores)
            if model.revocation_count > revocations_before:
                revoked_at_window = (update.window_start_ms, total)
            assert update.total_score == total
            assert update.previous_score == published
            assert update.window_end_ms == update.window_start_ms + SIZE_MS
            assert update.dimension_scores == tuple(scores[d] for d in DIMS)
            assert update.window_counts == tuple(window.counts)
            assert update.late_signals == window.late
            assert update.lifetime_counts == lifetime
            assert update.revoked == model.revoked
            assert update.at_risk == (not model.revoked and total < config.warning_threshold)
            assert update.weights_version == config.version
            assert update.computed_at_ms == update.window_end_ms + GRACE_MS
            published = total
        revocation = None if outcome is None else outcome.revocation
        if revoked_at_window is not None:
            assert revocation is not None
            assert revocation.trigger == WindowTrigger(revoked_at_window[0])
            assert revocation.total_score == revoked_at_window[1]
        else:
            assert revocation is None

    def tick(at: int) -> None:
        nonlocal clock, tick_offset, closed_by
        clock = max(clock, at)
        tick_offset += 1
        outcome = close_windows(AGENT, state, clock, tick_offset, WINDOWS, config)
        if outcome.updates:
            closed_by = None
        close_due(clock, outcome)

    for selector, d, value, advance, skew in script:
        now += advance
        if selector <= 13:  # a new signal
            last_offset[d] += 1 + (skew % 3 == 0)  # offsets may have gaps (compaction, filters)
            trigger = SignalTrigger(d, 0, last_offset[d], f"sig-{d}-{last_offset[d]}")
            stamped = now + skew
            effective = now if stamped > now + GRACE_MS else stamped
            outcome = apply_signal(
                AGENT, state, trigger, value, stamped, now, clock, WINDOWS, config
            )
            assert outcome.applied
            # A critical signal: windows that stream time or its own time took past their end
            # + grace close before it is applied. Other signals leave them to the next tick.
            if value < 0.3:
                close_due(max(clock, effective), outcome.closed)
            else:
                assert outcome.closed is None
            if outcome.closed is not None:
                closed_by = (d, trigger.offset)
            for window_start, window in open_windows.items():
                if effective >= window_start + SIZE_MS and window.ends[d] is None:
                    window.ends[d] = (
                        model.dimension_scores()[DIMS[d]],
                        model.lifetime_counts[DIMS[d]],
                    )
            revocations_before = model.revocation_count
            model.record(DIMS[d], value, at=effective)
            start = effective - effective % SIZE_MS
            if clock >= start + SIZE_MS + GRACE_MS:  # its window is closed: late
                open_windows.setdefault(clock - clock % SIZE_MS, Window()).late += 1
                late_total += 1
            else:
                open_windows.setdefault(start, Window()).counts[d] += 1
            if model.revocation_count > revocations_before:
                assert outcome.revocation is not None
                assert outcome.revocation.trigger == trigger
                assert (
                    outcome.revocation.total_score
                    == model.history[
                        max(i for i, (at, _) in enumerate(model.history) if at == effective)
                    ][1]
                )
                assert outcome.revocation.threshold == config.revocation_threshold
            else:
                assert outcome.revocation is None
            clock = max(clock, effective)  # stream time: the latest signal time applied
        elif selector <= 16:
            tick(now)
        elif selector <= 18:  # redelivery of an already applied record: no effect at all
            if last_offset[d] < 0:
                continue
            offset = max(0, last_offset[d] - (abs(skew) % 4))
            before = copy.deepcopy(state)
            outcome = apply_signal(
                AGENT, state, SignalTrigger(d, 0, offset), value, now, now, clock, WINDOWS, config
            )
            assert not outcome.applied
            assert outcome.revocation is None
            assert state == before
            # The revocation a redelivered signal caused is published again, unless the agent
            # has been reinstated since (re-publishing would revoke it again downstream); and
            # so are the updates of the windows its arrival closed, if no close came since.
            cause = state.revocation.trigger if state.revocation else None
            if (
                state.revoked
                and isinstance(cause, SignalTrigger)
                and (cause.dimension, cause.offset) == (d, offset)
            ):
                assert outcome.republish is state.revocation
            else:
                assert outcome.republish is None
            if closed_by == (d, offset):
                assert outcome.closed is not None
                assert outcome.closed.updates == state.last_updates
            else:
                assert outcome.closed is None
        else:
            lifted = reinstate(state)
            assert lifted == model.reinstate()
            reinstated += lifted
        assert_same(state, model)

    tick(now + 10 * SIZE_MS)  # everything still open closes
    event(f"revocations: {min(model.revocation_count, 2)}")
    event(f"floors: {sum(f is not None for f in config.floors)}")
    event(f"reinstated: {'yes' if reinstated else 'no'}")
    event(f"history length: {'>= 10' if len(model.history) >= 10 else '< 10'}")
    event(f"late signals: {'some' if late_total else 'none'}")
    assert not state.open_windows and not open_windows
    assert_same(state, model, scores=True)
    assert formulas.trend([s for _, s in state.history]) == model.trend()


# --------------------------------------------------------------- worked, hand-computed examples


def test_no_signals_scores_the_new_agent_score() -> None:
    assert oracle.score_signals([]) == (500, dict.fromkeys(DIMS, 50.0))
    assert formulas.total_score([formulas.dimension_score([])] * 5, DEFAULT_WEIGHTS) == 500


@pytest.mark.parametrize(
    ("dimension", "expected"),
    [
        # 10 * (0 * w + 50 * (1 - w)):  w = 0.25 -> 375, w = 0.15 -> 425, w = 0.20 -> 400
        ("policy_compliance", 375),
        ("resource_efficiency", 425),
        ("output_quality", 400),
        ("security_posture", 375),
        ("collaboration_health", 425),
    ],
)
def test_one_dimension_all_bad(dimension: str, expected: int) -> None:
    signals = [(dimension, 0.0)] * 7
    assert oracle.score_signals(signals)[0] == expected
    i = DIMS.index(dimension)
    scores = [50.0] * 5
    scores[i] = formulas.dimension_score([0.0] * 7)
    assert scores[i] == 0.0
    assert formulas.total_score(scores, DEFAULT_WEIGHTS) == expected


def test_all_signals_good_scores_1000() -> None:
    signals = [(d, 1.0) for d in DIMS] * 30
    assert oracle.score_signals(signals)[0] == 1000
    assert formulas.dimension_score([1.0] * 250) == 100.0
    assert formulas.total_score([100.0] * 5, DEFAULT_WEIGHTS) == 1000


def test_recency_weighting_favours_the_newer_signal() -> None:
    # [0.0, 1.0]: 100 * 1.01 / 2.01 = 50.2487...; [1.0, 0.0]: 100 * 1 / 2.01 = 49.7512...
    assert formulas.dimension_score([0.0, 1.0]) == pytest.approx(50.2487562)
    assert formulas.dimension_score([1.0, 0.0]) == pytest.approx(49.7512438)
    # policy at 50.2487 -> 10 * (12.562 + 37.5) = 500.6 -> 500; at 49.7512 -> 499.38 -> 499
    assert oracle.score_signals([("policy_compliance", 0.0), ("policy_compliance", 1.0)])[0] == 500
    assert oracle.score_signals([("policy_compliance", 1.0), ("policy_compliance", 0.0)])[0] == 499
    assert (
        formulas.total_score(
            [formulas.dimension_score([1.0, 0.0]), 50, 50, 50, 50], DEFAULT_WEIGHTS
        )
        == 499
    )


def test_only_the_last_100_signals_of_a_dimension_count() -> None:
    values = [0.0] * 100 + [1.0] * 100
    assert formulas.dimension_score(values) == 100.0
    # policy 100 -> 10 * (25 + 37.5) = 625
    assert oracle.score_signals([("policy_compliance", v) for v in values])[0] == 625
    assert (
        formulas.total_score([formulas.dimension_score(values), 50, 50, 50, 50], DEFAULT_WEIGHTS)
        == 625
    )


def test_a_chatty_dimension_does_not_evict_another() -> None:
    # Contract fix 1: the seed's shared 1000-signal buffer would forget the 100 policy signals and
    # report policy back at 50 (total 600). Per dimension: 10 * (0 + 7.5 + 20 + 12.5 + 7.5) = 475.
    signals = [("policy_compliance", 0.0)] * 100 + [("output_quality", 1.0)] * 1000
    total, scores = oracle.score_signals(signals)
    assert (total, scores["policy_compliance"]) == (475, 0.0)
    state = AgentState()
    config = ScoringConfig.validated(DEFAULT_WEIGHTS)
    for offset, (dimension, value) in enumerate(signals):
        apply_signal(
            AGENT,
            state,
            SignalTrigger(DIMS.index(dimension), 0, offset),
            value,
            START_MS,
            START_MS,
            START_MS,
            WINDOWS,
            config,
        )
    outcome = close_windows(AGENT, state, START_MS + 10 * SIZE_MS, 1, WINDOWS, config)
    assert [u.total_score for u in outcome.updates] == [475]
    assert outcome.updates[0].lifetime_counts == (100, 0, 1000, 0, 0)


def test_two_bad_dimensions_revoke_with_the_seeds_reason() -> None:
    agent = oracle.OracleAgent()
    agent.record("policy_compliance", 0.0)
    assert (agent.total_score, agent.revoked) == (375, False)
    agent.record("security_posture", 0.0)  # 10 * (0 + 7.5 + 10 + 0 + 7.5) = 250
    assert (agent.total_score, agent.revoked) == (250, True)
    assert agent.revocation_reason == "Trust score 250 below threshold"
    assert agent.tier == "untrusted"
    agent.record("security_posture", 0.0)  # revoked once only
    assert agent.revocation_count == 1
    assert agent.history_scores() == [375, 250, 250]


def test_critical_boundary_is_strictly_below_0_3() -> None:
    agent = oracle.OracleAgent()
    assert agent.record("output_quality", 0.3) is False
    assert agent.record("output_quality", 0.29999) is True
    state = AgentState()
    config = ScoringConfig.validated(DEFAULT_WEIGHTS)
    apply_signal(
        AGENT, state, SignalTrigger(2, 0, 0), 0.3, START_MS, START_MS, START_MS, WINDOWS, config
    )
    assert state.history == []
    apply_signal(
        AGENT, state, SignalTrigger(2, 0, 1), 0.29999, START_MS, START_MS, START_MS, WINDOWS, config
    )
    assert state.history == [(START_MS, agent.total_score)]


@pytest.mark.parametrize(
    ("scores", "expected"),
    [
        ([], "stable"),
        ([0, 1000], "stable"),
        ([0, 0, 0, 1000, 1000], "stable"),  # five entries or fewer: stable, however steep
        ([500, 551, 551, 551, 551, 551], "improving"),
        ([500, 550, 550, 550, 550, 550], "stable"),  # exactly +50 is not "more than"
        ([500, 449, 449, 449, 449, 449], "degrading"),
        ([500, 450, 450, 450, 450, 450], "stable"),  # exactly -50 is not "less than"
        # only the last ten count: the leading 0s are outside the window
        ([0, 0, 0, 500, 500, 500, 500, 500, 500, 500, 500, 500, 500], "stable"),
        ([400] * 5 + [450] * 5, "stable"),
        ([400] * 5 + [450, 450, 450, 450, 451], "improving"),  # mean 450.2 > 400 + 50
        ([400] * 5 + [350, 350, 350, 350, 349], "degrading"),  # mean 349.8 < 400 - 50
    ],
)
def test_trend_examples(scores: list[int], expected: str) -> None:
    assert formulas.trend(scores) == expected
    assert oracle.trend(scores) == expected


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        ((100, 100, 50, 100), 1.0),  # within both budgets
        ((200, 100, 400, 100), 0.375),  # (0.5 + 0.25) / 2
        ((1000, 100, 100, 100), 0.55),  # (0.1 + 1) / 2
        ((0, 0, 0, 0), 0.0),  # the seed's max(1, used): a zero budget scores 0
        ((0, 5, 0, 5), 1.0),
        ((3, 1, 1, 1), (1 / 3 + 1.0) / 2),
    ],
)
def test_resource_efficiency_examples(usage: tuple[int, int, int, int], expected: float) -> None:
    assert formulas.resource_efficiency(*usage) == expected
    assert oracle.resource_efficiency(*usage) == expected


@pytest.mark.parametrize(
    ("total", "expected"),
    [
        (1000, "verified_partner"),
        (900, "verified_partner"),
        (899, "trusted"),
        (700, "trusted"),
        (699, "standard"),
        (500, "standard"),
        (499, "probationary"),
        (300, "probationary"),
        (299, "untrusted"),
        (0, "untrusted"),
    ],
)
def test_tier_boundaries(total: int, expected: str) -> None:
    assert tier_for(total).value == expected
    assert oracle.tier(total) == expected
