"""Encoding of the worker's outputs (score updates, revocations) as the JSON the contract promises.

Built from the frozen records in the agent's state, so a re-published output is byte-identical to
the first publication.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import orjson

from streams.messages import iso_utc
from streams.scoring import agent as scoring
from streams.scoring.model import DIMENSIONS, tier_for


@lru_cache(maxsize=64)
def _window_bound(epoch_ms: int) -> str:
    # Every agent's update for a window names the same two instants: format them once.
    return iso_utc(epoch_ms)


def score_update_message(agent_did: str, update: scoring.ScoreUpdate) -> bytes:
    return orjson.dumps(
        {
            "agent_did": agent_did,
            "window_start": _window_bound(update.window_start_ms),
            "window_end": _window_bound(update.window_end_ms),
            "total_score": update.total_score,
            "previous_score": update.previous_score,
            "score_change": update.total_score - update.previous_score,
            "tier": tier_for(update.total_score).value,
            "at_risk": update.at_risk,
            "revoked": update.revoked,
            "dimensions": {
                d.value: {
                    "score": update.dimension_scores[i],
                    "signal_count": update.lifetime_counts[i],
                    "window_signal_count": update.window_counts[i],
                }
                for i, d in enumerate(DIMENSIONS)
            },
            "signals_in_window": update.signals_in_window,
            "late_signals": update.late_signals,
            "weights_version": update.weights_version,
            "computed_at": iso_utc(update.computed_at_ms),
        }
    )


def reinstatement_message(agent_did: str, reinstatement: scoring.Reinstatement) -> bytes:
    return orjson.dumps(
        {
            "type": "reinstated",
            "reinstatement_id": reinstatement.reinstatement_id,
            "agent_did": agent_did,
            "reinstated_at": iso_utc(reinstatement.reinstated_at_ms),
            "lifted_revocation_id": reinstatement.lifted_revocation_id,
            "requested_by": reinstatement.requested_by,
            "reason": reinstatement.reason,
            "request_id": reinstatement.request_id,
        }
    )


def revocation_message(
    agent_did: str, revocation: scoring.Revocation, signal_topics: tuple[str, ...], window_ms: int
) -> bytes:
    trigger: dict[str, Any]
    if isinstance(revocation.trigger, scoring.SignalTrigger):
        t = revocation.trigger
        trigger = {
            "kind": "signal",
            "signal_id": t.signal_id,
            "topic": signal_topics[t.dimension],
            "partition": t.partition,
            "offset": t.offset,
        }
    else:
        start = revocation.trigger.window_start_ms
        trigger = {
            "kind": "window",
            "window_start": iso_utc(start),
            "window_end": iso_utc(start + window_ms),
        }
    return orjson.dumps(
        {
            "type": "revoked",
            "revocation_id": revocation.revocation_id,
            "agent_did": agent_did,
            "revoked_at": iso_utc(revocation.revoked_at_ms),
            "total_score": revocation.total_score,
            "threshold": revocation.threshold,
            "reason": revocation.reason,
            "dimensions": {
                d.value: revocation.dimension_scores[i] for i, d in enumerate(DIMENSIONS)
            },
            "trigger": trigger,
            "weights_version": revocation.weights_version,
        }
    )
