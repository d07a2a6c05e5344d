"""What the API answers, as plain data: one agent's summary and explanation, health entries, and
pages of fleet-wide views merged from every worker's own page.

Fleet-wide views are paginated in agent (DID) order, the one order every worker can read its
share in without reading all of it: a page is at most ``limit`` agents after the cursor, each
worker reads at most a bounded number of agents for it, and the next page starts after the last
agent every worker got to. A page may therefore hold fewer agents than ``limit`` (even none) and
still have a next one; the view is complete once ``next_cursor`` is null.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from streams.errors import TrustServiceError
from streams.messages import iso_utc
from streams.scoring.agent import AgentState
from streams.scoring.explained import explained
from streams.scoring.formulas import contribution_points, trend
from streams.scoring.model import DIMENSIONS, ScoringConfig, tier_for

DEFAULT_PAGE = 100
MAX_PAGE = 1000
#: Agents one worker reads at most for one page of a filtered view (at risk, health report):
#: a page costs a bounded time however few agents match.
SCAN_BUDGET = 10_000


def summary_of(did: str, score: int, revoked: bool, config: ScoringConfig) -> dict[str, Any]:
    return {
        "agent_did": did,
        "total_score": score,
        "tier": tier_for(score).value,
        "at_risk": not revoked and score < config.warning_threshold,
        "revoked": revoked,
        "config_version": config.version,
    }


def summary(did: str, state: AgentState, config: ScoringConfig) -> dict[str, Any]:
    return summary_of(did, state.score, state.revoked, config)


def explanation(did: str, state: AgentState, config: ScoringConfig) -> dict[str, Any]:
    scores = state.dimension_scores()
    in_window = [sum(t.counts[i] for t in state.open_windows.values()) for i in range(5)]
    revocation = state.revocation
    return {
        **summary(did, state, config),
        "dimensions": {
            d.value: {
                "score": scores[i],
                "signal_count": state.lifetime[i],
                "window_signal_count": in_window[i],
                "weight": config.weights[i],
                "contribution": contribution_points(scores[i], config.weights[i]),
            }
            for i, d in enumerate(DIMENSIONS)
        },
        "recent_signals": [
            {"dimension": DIMENSIONS[d].value, "value": v, "source": s, "timestamp": iso_utc(t)}
            for d, v, s, t in explained(state.recent_signals)
        ],
        "history": [{"at": iso_utc(at), "score": score} for at, score in state.history],
        "trend": trend([score for _, score in state.history]),
        "revocation": None
        if revocation is None or not state.revoked
        else {
            "revocation_id": revocation.revocation_id,
            "revoked_at": iso_utc(revocation.revoked_at_ms),
            "reason": revocation.reason,
        },
        "reinstatement": _reinstatement(state),
    }


def _reinstatement(state: AgentState) -> dict[str, Any] | None:
    """The last lifted revocation, while the agent has not been revoked again."""
    lifted = state.reinstatement
    if lifted is None or state.revoked:
        return None
    revocation = state.revocation
    return {
        "reinstatement_id": lifted.reinstatement_id,
        "reinstated_at": iso_utc(lifted.reinstated_at_ms),
        "requested_by": lifted.requested_by,
        "reason": lifted.reason,
        "lifted_revocation_id": lifted.lifted_revocation_id,
        # What the lifted revocation said, when the state still holds it.
        "lifted_reason": revocation.reason
        if revocation is not None and revocation.revocation_id == lifted.lifted_revocation_id
        else None,
    }


def health_entry(state: AgentState, cutoff_ms: int) -> dict[str, Any] | None:
    scores = [score for at, score in state.history if at >= cutoff_ms]
    if not scores:
        return None
    return {
        "current_score": state.score,
        "min_score": min(scores),
        "max_score": max(scores),
        "avg_score": sum(scores) / len(scores),
        "trend": trend([score for _, score in state.history]),
        "revoked": state.revoked,
    }


# -- cursors and limits -------------------------------------------------------------------------


class BadRequest(TrustServiceError, ValueError):
    """A query parameter the API cannot use; the message says which and why."""


def encode_cursor(after: str) -> str:
    """An opaque cursor: the page after it starts after agent ``after``."""
    return base64.urlsafe_b64encode(after.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> str | None:
    """The agent a cursor points after (None: from the start)."""
    if not cursor:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        after = base64.b64decode(padded, altchars=b"-_", validate=True).decode()
    except (binascii.Error, ValueError) as exc:
        raise BadRequest("cursor is not one this API gave out (next_cursor)") from exc
    if not after:
        raise BadRequest("cursor is not one this API gave out (next_cursor)")
    return after


def parse_limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_PAGE
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_PAGE:
        raise BadRequest(f"limit must be a whole number from 1 to {MAX_PAGE}")
    return limit


# -- one worker's page, and the merge ------------------------------------------------------------


@dataclass(slots=True)
class LocalPage:
    """One worker's answer for a page: what it found after the cursor, in DID order."""

    items: list[tuple[str, Any]]
    #: The last agent it read when it stopped early (limit or budget); None: it read to the end.
    stopped_at: str | None
    #: The partitions it read through.
    partitions: list[int]
    #: Counts over every agent of the worker (health report), and when they were taken (epoch
    #: seconds; None: not counted yet).
    totals: dict[str, int] = field(default_factory=dict)
    counted_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "items": [[did, entry] for did, entry in self.items],
            "stopped_at": self.stopped_at,
            "partitions": self.partitions,
            "totals": self.totals,
            "counted_at": self.counted_at,
        }

    @classmethod
    def from_json(cls, body: Any) -> LocalPage:
        """Another worker's answer; ValueError when it is not one."""
        try:
            return cls(
                items=[(str(did), entry) for did, entry in body["items"]],
                stopped_at=None if body["stopped_at"] is None else str(body["stopped_at"]),
                partitions=[int(p) for p in body["partitions"]],
                totals={str(k): int(v) for k, v in body["totals"].items()},
                counted_at=None if body["counted_at"] is None else float(body["counted_at"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"not a page: {exc!r}") from exc


@dataclass(slots=True)
class MergedPage:
    items: list[tuple[str, Any]]
    #: Where the next page starts (None: this was the last).
    next_after: str | None
    #: Partitions no answering worker read (moving, restoring, or their worker did not answer).
    missing_partitions: list[int]
    totals: dict[str, int]
    #: When the oldest of the counts summed in ``totals`` was taken (None: a worker had none).
    counted_at: float | None


def merge_pages(pages: Sequence[LocalPage], limit: int, partitions: int) -> MergedPage:
    """The page every worker's own page makes together.

    A worker that stopped early has only been read up to where it stopped, so the page ends at
    the earliest such point: anything after it could still be missing an agent of that worker.
    """
    stops = [page.stopped_at for page in pages if page.stopped_at is not None]
    bound = min(stops) if stops else None
    items = sorted(
        (item for page in pages for item in page.items if bound is None or item[0] <= bound),
        key=lambda item: item[0],
    )
    next_after = bound
    if len(items) > limit:
        items = items[:limit]
        next_after = items[-1][0]
    read = {p for page in pages for p in page.partitions}
    totals: dict[str, int] = {}
    for page in pages:
        for name, value in page.totals.items():
            totals[name] = totals.get(name, 0) + value
    times = [page.counted_at for page in pages]
    counted_at = None if None in times or not times else min(t for t in times if t is not None)
    return MergedPage(items, next_after, sorted(set(range(partitions)) - read), totals, counted_at)


def page_body(
    merged: MergedPage, missing_workers: Iterable[str], items_as: str = "list"
) -> dict[str, Any]:
    """What a fleet-wide view answers around its items: the cursor and what is missing."""
    missing = sorted(missing_workers)
    body: dict[str, Any] = {
        "agents": [entry for _, entry in merged.items]
        if items_as == "list"
        else dict(merged.items),
        "count": len(merged.items),
        "next_cursor": None if merged.next_after is None else encode_cursor(merged.next_after),
        "partial": bool(missing or merged.missing_partitions),
        "missing_workers": missing,
        "missing_partitions": merged.missing_partitions,
    }
    return body
