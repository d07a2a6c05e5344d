"""Compact, versioned encoding of :class:`AgentState` for the state table and its changelog.

A positional JSON array (orjson) rather than named fields: it is read and written once per agent per
batch on the hot path, and every byte is paid again in the changelog. orjson writes floats in their
shortest round-tripping form, so scores recomputed from decoded state are bit-identical. The first
element is the format version; a decoder meeting a newer version fails loudly instead of guessing.

Decoding trusts nothing: stored bytes can be damaged (a disk, a forged changelog record), so every
field's shape, type and range is checked (:mod:`.decoding`), and anything else than a state the
transitions can work on raises :class:`StateFormatError` (and nothing else).

Formats: 1 had 17 elements; 2 adds each dimension's score accepted at reinstatement and the time
the last signal was applied; 3 adds, per open window, each dimension's score as of its end (when
known), the signal that last closed windows, and the open windows' starts again; 4 adds, last, the
tick that last closed windows again and a CRC-32 of every byte before it. A worker taking a
partition over reads its window schedule from those last fields of each state, checked by the
CRC, without decoding the rest (:func:`sealed_schedule`: 1 to 2 us, against 10 to 50 for a
decode), and a damaged byte anywhere in a state is found all the same.
"""

from __future__ import annotations

import zlib
from typing import Any

import orjson

from streams.scoring.agent import AgentState, Reinstatement, Revocation, ScoreUpdate, SignalTrigger
from streams.scoring.decoding import StateFormatError as StateFormatError
from streams.scoring.decoding import state_from_fields

FORMAT_VERSION = 4
#: Formats this release reads.
READABLE_FORMATS = (1, 2, 3, 4)
_FIELDS = {1: 17, 2: 19, 3: 21, 4: 23}
#: Where format 3's fields end in a format-4 record (the tick and the CRC follow).
_FORMAT_3_FIELDS = _FIELDS[3]
_LAST_CLOSE_TICK_AT = 11


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


def _encode_history(history: list[tuple[int, int]]) -> list[int]:
    """Flat [t0, score0, dt1, score1, ...]: times as ms since the previous entry, because 100
    entries of absolute epoch-ms times would be the largest part of a typical state."""
    flat: list[int] = []
    previous = 0
    for at, score in history:
        flat += (at - previous, score)
        previous = at
    return flat


def _kept(written: bytes) -> bytes:
    """A copy of ``written`` to keep: what orjson returns sits in a buffer of at least 4 KiB."""
    return bytes(memoryview(written))


def _recent_json(state: AgentState) -> list[orjson.Fragment]:
    """Each dimension's recent values as JSON, written again only for a list changed since."""
    written = state.recent_written
    json_at = len(state.recent)  # the lists written first, then their JSON
    parts = []
    for d, values in enumerate(state.recent):
        if written[d] is not values:
            written[d] = values
            written[json_at + d] = _kept(orjson.dumps(values))
        parts.append(orjson.Fragment(written[json_at + d]))
    return parts


def _history_json(state: AgentState) -> orjson.Fragment:
    """The history as JSON (see :func:`_encode_history`), written again only when changed."""
    entry = state.history_written
    if entry is None or entry[0] is not state.history:
        entry = state.history_written = (
            state.history,
            _kept(orjson.dumps(_encode_history(state.history))),
        )
    return orjson.Fragment(entry[1])


def encode_state(state: AgentState) -> bytes:
    unsealed = orjson.dumps(
        [
            FORMAT_VERSION,
            _recent_json(state),
            state.lifetime,
            state.applied_offsets,
            [
                [start, tally.counts, tally.late]
                if tally.ends is None
                else [start, tally.counts, tally.late, tally.ends]
                for start, tally in state.open_windows.items()
            ],
            state.score,
            state.published_score,
            _history_json(state),
            state.revoked,
            state.revocation_count,
            _encode_revocation(state.revocation),
            state.last_close_tick,
            [_encode_update(u) for u in state.last_updates],
            state.applied_command_offset,
            _encode_reinstatement(state.reinstatement),
            state.reinstated_at_score,
            [orjson.Fragment(entry) for entry in state.recent_signals],
            state.reinstated_dimension_scores,
            state.last_signal_at_ms,
            state.last_close_signal,
            sorted(state.open_windows),
            state.last_close_tick,
        ]
    )[:-1]
    return b"%b,%d]" % (unsealed, zlib.crc32(unsealed))


def sealed_schedule(data: bytes, *, verify: bool = True) -> tuple[list[int], int] | None:
    """A stored state's open windows' starts and the tick that last closed its windows, read
    from its last fields without decoding the rest, once its CRC matches (``verify``: false for
    bytes already known intact); None when ``data`` is not a format-4 state with a matching CRC
    (decode it then, to find out what it is). Every step is one call into C: a takeover makes a
    million of them."""
    parts = data.rsplit(b",", 2)
    if len(parts) != 3 or not data.startswith(b"[4,"):
        return None
    rest, tick, crc = parts
    try:
        if not crc.endswith(b"]") or (
            verify and zlib.crc32(memoryview(data)[: len(data) - len(crc) - 1]) != int(crc[:-1])
        ):
            return None
        last_close_tick = int(tick)
        if rest.endswith(b",[]"):
            return [], last_close_tick
        if not rest.endswith(b"]"):
            return None
        starts = rest[rest.rindex(b"[") + 1 : -1].split(b",")
        return [int(start) for start in starts], last_close_tick
    except ValueError:
        return None


def _check_seal(data: bytes, fields: list[Any]) -> None:
    """A format-4 record's CRC and repeated tick are what its bytes say."""
    seal_at = data.rfind(b",")
    if type(fields[-1]) is not int or fields[-1] != zlib.crc32(memoryview(data)[:seal_at]):
        raise StateFormatError("agent state record is damaged: its CRC does not match")
    if fields[-2] != fields[_LAST_CLOSE_TICK_AT] or type(fields[-2]) is not int:
        raise StateFormatError("agent state record is damaged: its two closing ticks differ")


def decode_state(data: bytes) -> AgentState:
    """The state ``data`` holds; :class:`StateFormatError` (only) for any bytes that are not one."""
    try:
        raw = orjson.loads(data)
    except (orjson.JSONDecodeError, TypeError) as exc:
        raise StateFormatError(f"agent state is not a state record: {exc}") from exc
    if type(raw) is not list or not raw:
        raise StateFormatError("agent state is not a state record: not a non-empty JSON array")
    version = raw[0]
    if type(version) is not int or version not in READABLE_FORMATS:
        raise StateFormatError(
            f"agent state format {version!r} is not understood by this release "
            f"(it reads formats {', '.join(map(str, READABLE_FORMATS))}); upgrade the worker"
        )
    if len(raw) != _FIELDS[version]:
        raise StateFormatError(
            f"agent state record is damaged: format {version} has {_FIELDS[version]} fields, "
            f"this one {len(raw)}"
        )
    if version == 4:
        _check_seal(data, raw)
        raw = raw[:_FORMAT_3_FIELDS]
    try:
        return state_from_fields(raw)
    except (ValueError, TypeError, IndexError, KeyError, OverflowError) as exc:
        # StateFormatError is a ValueError; the others come from unpacking or comparing a
        # value of the wrong shape or type: damaged all the same.
        if isinstance(exc, StateFormatError):
            raise
        raise StateFormatError(f"agent state record is damaged: {exc!r}") from exc
