"""Compact, versioned encoding of :class:`AgentState` for the state table and its changelog.

A positional JSON array (orjson) rather than named fields: it is read and written once per agent per
batch on the hot path, and every byte is paid again in the changelog. orjson writes floats in their
shortest round-tripping form, so scores recomputed from decoded state are bit-identical. The first
element is the format version; a decoder meeting a newer version fails loudly instead of guessing.
"""

from __future__ import annotations

from typing import Any

import orjson

from .agent import (
    AgentState,
    Reinstatement,
    Revocation,
    ScoreUpdate,
    SignalTrigger,
    WindowTally,
    WindowTrigger,
)

FORMAT_VERSION = 1


class StateFormatError(ValueError):
    """Stored agent state could not be decoded: it was written by a newer or a broken release."""


def _encode_revocation(r: Revocation | None) -> list[Any] | None:
    if r is None:
        return None
    if isinstance(r.trigger, SignalTrigger):
        trigger: list[Any] = [
            0,
            r.trigger.dimension,
            r.trigger.partition,
            r.trigger.offset,
            r.trigger.signal_id,
        ]
    else:
        trigger = [1, r.trigger.window_start_ms]
    return [
        r.revocation_id,
        r.revoked_at_ms,
        r.total_score,
        r.threshold,
        r.reason,
        list(r.dimension_scores),
        trigger,
        r.weights_version,
    ]


def _decode_revocation(raw: list[Any] | None) -> Revocation | None:
    if raw is None:
        return None
    rid, at, total, threshold, reason, scores, trig, version = raw
    trigger: SignalTrigger | WindowTrigger
    if trig[0] == 0:
        trigger = SignalTrigger(trig[1], trig[2], trig[3], trig[4])
    else:
        trigger = WindowTrigger(trig[1])
    return Revocation(rid, at, total, threshold, reason, tuple(scores), trigger, version)


def _encode_reinstatement(r: Reinstatement | None) -> list[Any] | None:
    if r is None:
        return None
    return [
        r.reinstatement_id,
        r.reinstated_at_ms,
        r.lifted_revocation_id,
        r.requested_by,
        r.reason,
        r.request_id,
        r.command_offset,
    ]


def _encode_update(u: ScoreUpdate) -> list[Any]:
    return [
        u.window_start_ms,
        u.window_end_ms,
        u.total_score,
        u.previous_score,
        list(u.dimension_scores),
        list(u.lifetime_counts),
        list(u.window_counts),
        u.late_signals,
        u.weights_version,
        u.computed_at_ms,
        u.revoked,
        u.at_risk,
    ]


def _decode_update(raw: list[Any]) -> ScoreUpdate:
    (start, end, total, prev, scores, lifetime, counts, late, version, at, revoked, at_risk) = raw
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


def _encode_history(history: list[tuple[int, int]]) -> list[int]:
    """Flat [t0, score0, dt1, score1, ...]: times as ms since the previous entry, because 100
    entries of absolute epoch-ms times would be the largest part of a typical state."""
    flat: list[int] = []
    previous = 0
    for at, score in history:
        flat += (at - previous, score)
        previous = at
    return flat


def _decode_history(flat: list[int]) -> list[tuple[int, int]]:
    history = []
    at = 0
    for i in range(0, len(flat), 2):
        at += flat[i]
        history.append((at, flat[i + 1]))
    return history


def encode_state(state: AgentState) -> bytes:
    return orjson.dumps(
        [
            FORMAT_VERSION,
            state.recent,
            state.lifetime,
            state.applied_offsets,
            [[start, tally.counts, tally.late] for start, tally in state.open_windows.items()],
            state.score,
            state.published_score,
            _encode_history(state.history),
            state.revoked,
            state.revocation_count,
            _encode_revocation(state.revocation),
            state.last_close_tick,
            [_encode_update(u) for u in state.last_updates],
            state.applied_command_offset,
            _encode_reinstatement(state.reinstatement),
            state.reinstated_at_score,
            state.recent_signals,
        ]
    )


def decode_state(data: bytes) -> AgentState:
    try:
        raw = orjson.loads(data)
        version = raw[0]
    except (orjson.JSONDecodeError, TypeError, IndexError, KeyError) as exc:
        raise StateFormatError(f"agent state is not a state record: {exc}") from exc
    if version != FORMAT_VERSION:
        raise StateFormatError(
            f"agent state format {version!r} is not understood by this release "
            f"(it reads format {FORMAT_VERSION}); upgrade the worker"
        )
    try:
        return _state_from_fields(raw)
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        raise StateFormatError(f"agent state record is damaged: {exc!r}") from exc


def _state_from_fields(raw: list[Any]) -> AgentState:
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
    ) = raw
    return AgentState(
        recent=recent,
        lifetime=lifetime,
        applied_offsets=applied,
        open_windows={start: WindowTally(counts, late) for start, counts, late in windows},
        score=score,
        published_score=published,
        history=_decode_history(history),
        revoked=revoked,
        revocation_count=revocation_count,
        revocation=_decode_revocation(revocation),
        last_close_tick=last_close_tick,
        last_updates=tuple(_decode_update(u) for u in last_updates),
        applied_command_offset=applied_command_offset,
        reinstatement=None if reinstatement is None else Reinstatement(*reinstatement),
        reinstated_at_score=reinstated_at_score,
        recent_signals=[(d, v, s, t) for d, v, s, t in recent_signals],
    )
