"""Reading a stored state's fields, trusting nothing (see :mod:`.codec` for the format).

Every field's shape, type and range is checked, so a decoded state is one every transition can
work on and write again; anything else raises :class:`StateFormatError`.
"""

from __future__ import annotations

from typing import Any

from streams.errors import TrustServiceError
from streams.scoring.agent import (
    EXPLAINED_SIGNALS,
    N_DIMENSIONS,
    AgentState,
    Reinstatement,
    Revocation,
    ScoreUpdate,
    SignalTrigger,
    WindowTally,
    WindowTrigger,
)
from streams.scoring.explained import explained_entry
from streams.scoring.model import HISTORY_LENGTH, RECENT_SIGNALS_PER_DIMENSION

_N = N_DIMENSIONS
#: Offsets and versions are signed 64-bit in Kafka; nothing stored may reach the limit, where
#: one more would exceed what orjson can write.
_BIG = 1 << 63
#: Counters are incremented and summed (a window's signals over five dimensions): kept far below
#: the 64-bit limit, so a sum of them is one too.
_COUNT_LIMIT = 1 << 53
_NUMBER = (float, int)


class StateFormatError(TrustServiceError, ValueError):
    """Stored agent state could not be decoded: it was written by a newer or a broken release."""


# The checks below run for every state read, on the hot path: each is one expression over a
# field, and loops over values are left to builtins. ``type(sum(xs)) is int`` says every value is
# an integer (a float makes the sum a float; anything else raises TypeError), several times
# faster than a type check per value; min and max raise TypeError on anything not comparable
# with a number. (Booleans pass as 0 and 1, which is harmless wherever a number is read.)


def _damaged(what: str) -> StateFormatError:
    return StateFormatError(f"agent state record is damaged: {what}")


def _counts(items: Any) -> bool:
    """Exactly one counter per dimension, none negative, each small enough to be incremented."""
    return (
        type(items) is list
        and len(items) == _N
        and type(sum(items)) is int
        and min(items) >= 0
        and max(items) < _COUNT_LIMIT
    )


def _total(value: Any) -> bool:
    """A total score: an integer in 0..1000, as every output that carries one promises."""
    return type(value) is int and 0 <= value <= 1000


def _version(value: Any) -> bool:
    return type(value) is int and 0 <= value < _BIG


def _scores(items: Any) -> bool:
    """Exactly one score in [0, 100] per dimension."""
    return type(items) is list and len(items) == _N and min(items) >= 0.0 and max(items) <= 100.0


def _decode_revocation(raw: Any) -> Revocation | None:
    if raw is None:
        return None
    rid, at, total, threshold, reason, scores, trig, version = raw
    if not (
        type(rid) is str
        and type(at) is int
        and _total(total)
        and _total(threshold)
        and type(reason) is str
        and _scores(scores)
        and type(trig) is list
        and _version(version)
    ):
        raise _damaged("its revocation")
    trigger: SignalTrigger | WindowTrigger
    if len(trig) == 5 and trig[0] == 0:
        _, d, partition, offset, signal_id = trig
        if not (
            type(d) is int
            and 0 <= d < _N
            and type(partition) is int
            and 0 <= partition < _BIG
            and _version(offset)
            and (signal_id is None or type(signal_id) is str)
        ):
            raise _damaged("its revocation's trigger")
        trigger = SignalTrigger(d, partition, offset, signal_id)
    elif len(trig) == 2 and trig[0] == 1 and type(trig[1]) is int:
        trigger = WindowTrigger(trig[1])
    else:
        raise _damaged("its revocation's trigger")
    return Revocation(rid, at, total, threshold, reason, tuple(scores), trigger, version)


def _decode_reinstatement(raw: Any) -> Reinstatement | None:
    if raw is None:
        return None
    rid, at, lifted, by, reason, request_id, offset = raw
    if not (
        type(rid) is str
        and type(at) is int
        and type(lifted) is str
        and type(by) is str
        and type(reason) is str
        and (request_id is None or type(request_id) is str)
        and type(offset) is int
        and -1 <= offset < _BIG
    ):
        raise _damaged("its reinstatement")
    return Reinstatement(rid, at, lifted, by, reason, request_id, offset)


def _decode_update(raw: Any) -> ScoreUpdate:
    (start, end, total, prev, scores, lifetime, counts, late, version, at, revoked, at_risk) = raw
    if not (
        type(start) is int
        and type(end) is int
        and _total(total)
        and _total(prev)
        and _scores(scores)
        and _counts(lifetime)
        and _counts(counts)
        and type(late) is int
        and 0 <= late < _COUNT_LIMIT
        and _version(version)
        and type(at) is int
        and type(revoked) is bool
        and type(at_risk) is bool
    ):
        raise _damaged("a score update it keeps")
    return ScoreUpdate(
        start,
        end,
        total,
        prev,
        tuple(scores),
        tuple(lifetime),
        tuple(counts),
        late,
        version,
        at,
        revoked,
        at_risk,
    )


def _decode_history(flat: Any) -> list[tuple[int, int]]:
    if not (
        type(flat) is list
        and len(flat) % 2 == 0
        and len(flat) <= 2 * HISTORY_LENGTH
        and type(sum(flat)) is int
        and (not flat or (min(flat[1::2]) >= 0 and max(flat[1::2]) <= 1000))
    ):
        raise _damaged("its history")
    history = []
    at = 0
    for i in range(0, len(flat), 2):
        at += flat[i]
        history.append((at, flat[i + 1]))
    # Times are written as differences from the previous one: the next to be written is taken
    # from the last time, which must be one a difference can be written from.
    if not -_BIG <= at < _BIG:
        raise _damaged("its history's times")
    return history


def _decode_windows(raw: Any) -> dict[int, WindowTally]:
    if type(raw) is not list:
        raise _damaged("its open windows")
    windows = {}
    for entry in raw:
        start, counts, late, *rest = entry
        ends = rest[0] if len(rest) == 1 else None
        if not (
            type(start) is int
            and _counts(counts)
            and type(late) is int
            and 0 <= late < _COUNT_LIMIT
            and len(rest) <= 1
            and (ends is None or _ends(ends))
        ):
            raise _damaged("an open window")
        windows[start] = WindowTally(counts, late, ends)
    return windows


def _ends(raw: Any) -> bool:
    """Per dimension None, or its score in [0, 100] and lifetime count at the window's end; at
    least one known."""
    return (
        type(raw) is list
        and len(raw) == _N
        and any(v is not None for v in raw)
        and all(
            v is None
            or (
                type(v) is list
                and len(v) == 2
                and type(v[0]) in _NUMBER
                and 0.0 <= v[0] <= 100.0
                and type(v[1]) is int
                and 0 <= v[1] < _COUNT_LIMIT
            )
            for v in raw
        )
    )


def _decode_recent(raw: Any) -> list[list[float]]:
    if not (type(raw) is list and len(raw) == _N):
        raise _damaged("its recent values")
    for values in raw:
        if not (
            type(values) is list
            and len(values) <= RECENT_SIGNALS_PER_DIMENSION
            and (not values or (min(values) >= 0.0 and max(values) <= 1.0))
        ):
            raise _damaged("its recent values")
    return raw


def _decode_explained(raw: Any) -> list[bytes]:
    if not (type(raw) is list and len(raw) <= EXPLAINED_SIGNALS):
        raise _damaged("its recent signals")
    explained = []
    for d, value, source, at in raw:
        if not (
            type(d) is int
            and 0 <= d < _N
            and type(value) in _NUMBER
            and 0.0 <= value <= 1.0
            and type(source) is str
            and type(at) is int
        ):
            raise _damaged("its recent signals")
        explained.append(explained_entry(d, float(value), source, at))
    return explained


def _decode_accepted(raw: Any) -> tuple[float | None, ...] | None:
    if raw is None:
        return None
    if not (
        type(raw) is list
        and len(raw) == _N
        and all(v is None or (type(v) in _NUMBER and 0.0 <= v <= 100.0) for v in raw)
    ):
        raise _damaged("its accepted dimension scores")
    return tuple(raw)


def _decode_close_signal(raw: Any) -> tuple[int, int] | None:
    if raw is None:
        return None
    if not (
        type(raw) is list
        and len(raw) == 2
        and type(raw[0]) is int
        and 0 <= raw[0] < _N
        and type(raw[1]) is int
        and 0 <= raw[1] < _BIG
    ):
        raise _damaged("the signal that last closed its windows")
    return (raw[0], raw[1])


def state_from_fields(raw: list[Any]) -> AgentState:
    """The state of a record's fields (format 1, 2 or 3, by their count, the version first; a
    format-4 record is read without its last two fields)."""
    (
        _,
        recent,
        lifetime,
        applied,
        windows,
        score,
        published,
        history,
        revoked,
        revocation_count,
        revocation,
        last_close_tick,
        last_updates,
        applied_command_offset,
        reinstatement,
        reinstated_at_score,
        recent_signals,
        *added,
    ) = raw
    if not (
        _counts(lifetime)
        and type(applied) is list
        and len(applied) == _N
        and type(sum(applied)) is int
        and min(applied) >= -1
        and max(applied) < _BIG  # Kafka offsets are signed 64-bit
        and _total(score)
        and _total(published)
        and type(revoked) is bool
        and type(revocation_count) is int
        and 0 <= revocation_count < _COUNT_LIMIT
        and type(last_close_tick) is int
        and last_close_tick < _BIG
        and type(last_updates) is list
        and type(applied_command_offset) is int
        and applied_command_offset < _BIG
        and (reinstated_at_score is None or _total(reinstated_at_score))
    ):
        raise _damaged("a count, score, flag or offset")
    state = AgentState(
        recent=_decode_recent(recent),
        lifetime=lifetime,
        applied_offsets=applied,
        open_windows=_decode_windows(windows),
        score=score,
        published_score=published,
        history=_decode_history(history),
        revoked=revoked,
        revocation_count=revocation_count,
        revocation=_decode_revocation(revocation),
        last_close_tick=last_close_tick,
        last_updates=tuple(_decode_update(u) for u in last_updates),
        applied_command_offset=applied_command_offset,
        reinstatement=_decode_reinstatement(reinstatement),
        reinstated_at_score=reinstated_at_score,
        recent_signals=_decode_explained(recent_signals),
    )
    if added:  # format 2 or 3
        accepted, last_signal_at, *format3 = added
        if type(last_signal_at) is not int:
            raise _damaged("its last signal time")
        state.reinstated_dimension_scores = _decode_accepted(accepted)
        state.last_signal_at_ms = last_signal_at
        if format3:
            closed_by, starts = format3
            state.last_close_signal = _decode_close_signal(closed_by)
            if starts != sorted(state.open_windows):
                raise _damaged("its open windows' starts")
    elif not state.revoked and state.reinstated_at_score is not None:
        # Format 1 kept no dimension levels. A state reinstated and not recalculated since
        # accepts its dimensions as they are, the nearest to what the operator saw.
        state.reinstated_dimension_scores = state.dimension_scores()
    return state
