"""What an agent's transitions record and publish: frozen once built, stored in its state.

Kept apart from the state machine (:mod:`.agent`, which re-exports them) so each module reads in
one sitting; the stored form of each is in :mod:`.codec`.
"""

from __future__ import annotations

from dataclasses import dataclass


# Not frozen, unlike its neighbours: one is built per signal, and a frozen dataclass's __init__
# costs three times as much. Nothing mutates a trigger once built.
@dataclass(slots=True)
class SignalTrigger:
    """Where a signal was read from: what a revocation names as its cause."""

    dimension: int
    partition: int
    offset: int
    signal_id: str | None = None

    def same_record(self, other: SignalTrigger) -> bool:
        return (self.dimension, self.partition, self.offset) == (
            other.dimension,
            other.partition,
            other.offset,
        )


@dataclass(frozen=True, slots=True)
class WindowTrigger:
    window_start_ms: int


@dataclass(frozen=True, slots=True)
class Revocation:
    revocation_id: str
    revoked_at_ms: int
    total_score: int
    threshold: int
    reason: str
    dimension_scores: tuple[float, ...]
    trigger: SignalTrigger | WindowTrigger
    weights_version: int


@dataclass(frozen=True, slots=True)
class Reinstatement:
    """An operator lifted a revocation: the audit record, kept to be re-published identically."""

    reinstatement_id: str
    reinstated_at_ms: int
    lifted_revocation_id: str
    requested_by: str
    reason: str
    request_id: str | None
    command_offset: int


@dataclass(frozen=True, slots=True)
class ScoreUpdate:
    """Everything a window's score update says, frozen at the moment the window closed."""

    window_start_ms: int
    window_end_ms: int
    total_score: int
    previous_score: int
    dimension_scores: tuple[float, ...]
    lifetime_counts: tuple[int, ...]
    window_counts: tuple[int, ...]
    late_signals: int
    weights_version: int
    computed_at_ms: int
    revoked: bool
    at_risk: bool

    @property
    def signals_in_window(self) -> int:
        return sum(self.window_counts)
