"""Building signals (pure): validation against the contract, encoding and placement."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka.partitioner import murmur2
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from streams.messages import DID_RE, Signal
from streams.scoring.formulas import resource_efficiency
from streams.scoring.model import DIMENSION_INDEX, DIMENSIONS, Dimension
from streams.sdk.errors import InvalidSignal


@dataclass(frozen=True, slots=True)
class PreparedSignal:
    """A validated signal encoded as the record the worker expects: dimension, key and value."""

    dimension: Dimension
    key: bytes
    value: bytes


def partition_for(agent_did: str, partitions: int) -> int:
    """The partition of every topic on which ``agent_did`` lives, given the topics' count.

    The Java client's rule (``toPositive(murmur2(key)) % partitions``), which is what the
    producer's default partitioner applies to the UTF-8 key.
    """
    if partitions < 1:
        raise ValueError(f"partitions must be at least 1, got {partitions}")
    return int(murmur2(agent_did.encode()) & 0x7FFFFFFF) % partitions


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _problem(error: ErrorDetails) -> tuple[str, str]:
    """(field, problem) for one pydantic error, worded for someone calling the SDK."""
    field = ".".join(str(part) for part in error["loc"]) or "(signal)"
    kind = error["type"]
    given = _shown(error["input"])
    if field == "agent_did" and kind == "string_pattern_mismatch":
        return field, (
            f"{given} is not a DID: expected did:<method>:<method-specific-id>, "
            "e.g. did:mesh:agent-42"
        )
    if field == "value" and kind == "float_type":
        kind_of = "a bool" if isinstance(error["input"], bool) else type(error["input"]).__name__
        return field, f"must be a number from 0.0 (bad) to 1.0 (good), not {kind_of} {given}"
    if field == "value" and kind in {"finite_number", "greater_than_equal", "less_than_equal"}:
        return field, f"must be a number from 0.0 (bad) to 1.0 (good), got {given}"
    if field == "timestamp" and kind == "timezone_aware":
        return field, (
            f"{given} has no time zone; pass an aware datetime, e.g. datetime.now(UTC), so it "
            "cannot be read in the wrong zone"
        )
    if field == "timestamp" and kind == "datetime_type":
        return field, f"must be a timezone-aware datetime, got {given}"
    message = error["msg"].removeprefix("Value error, ")
    return field, f"{message[:1].lower()}{message[1:]} (got {given})"


def _invalid(exc: ValidationError) -> InvalidSignal:
    problems = [_problem(error) for error in exc.errors(include_url=False)]
    field, problem = problems[0]
    if len(problems) > 1:
        problem += "; also " + "; ".join(f"{f}: {p}" for f, p in problems[1:])
    return InvalidSignal(field, problem)


def checked_dimension(dimension: Dimension | str) -> Dimension:
    if isinstance(dimension, str) and dimension in DIMENSION_INDEX:
        return Dimension(dimension)
    names = ", ".join(d.value for d in DIMENSIONS)
    raise InvalidSignal("dimension", f"{_shown(dimension)} is not one of {names}")


def prepare_signal(
    agent_did: str,
    dimension: Dimension | str,
    value: float,
    source: str,
    *,
    details: str | None = None,
    trace_id: str | None = None,
    signal_id: str | None = None,
    timestamp: datetime | None = None,
) -> PreparedSignal:
    """Validate one signal and encode it as its record; :class:`InvalidSignal` if it is not valid.

    The body is the :class:`~streams.messages.Signal` as JSON, with ``dimension`` included (the
    worker checks it against the topic) and absent optional fields left out. A timestamp is written
    in UTC with a ``Z``; without one, the worker uses the record's timestamp, which the producer
    sets when the record is accepted.
    """
    checked = checked_dimension(dimension)
    try:
        signal = Signal.model_validate(
            {
                "agent_did": agent_did,
                "value": value,
                "source": source,
                "dimension": checked,
                "details": details,
                "trace_id": trace_id,
                "signal_id": signal_id,
                "timestamp": timestamp,
            }
        )
    except ValidationError as exc:
        raise _invalid(exc) from None
    body: dict[str, Any] = {
        "agent_did": signal.agent_did,
        # An int such as 1 passes validation; the wire carries it as the float it stands for.
        "value": float(signal.value),
        "source": signal.source,
        "dimension": checked.value,
    }
    for name in ("details", "trace_id", "signal_id"):
        if (field_value := getattr(signal, name)) is not None:
            body[name] = field_value
    if signal.timestamp is not None:
        body["timestamp"] = signal.timestamp.astimezone(UTC)
    return PreparedSignal(
        checked, signal.agent_did.encode(), orjson.dumps(body, option=orjson.OPT_UTC_Z)
    )


def _require_bool(name: str, value: object) -> bool:
    # The reference engine takes any truthy value; here "no" or 0.4 is a caller's bug, not True.
    if not isinstance(value, bool):
        raise InvalidSignal(name, f"must be True or False, got {_shown(value)}")
    return value


def _require_text(name: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidSignal(name, f"must be a non-blank string, got {_shown(value)}")
    return value


def _require_count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidSignal(name, f"must be a non-negative integer, got {_shown(value)}")
    return value


def policy_compliance_signal(
    agent_did: str, compliant: bool, policy_name: str | None = None
) -> PreparedSignal:
    """Did the action keep to policy? 1.0 if so, else 0.0; from the policy engine."""
    return prepare_signal(
        agent_did,
        Dimension.POLICY_COMPLIANCE,
        1.0 if _require_bool("compliant", compliant) else 0.0,
        "policy_engine",
        details=f"Policy: {policy_name}" if policy_name else None,
    )


def resource_usage_signal(
    agent_did: str, tokens_used: int, tokens_budget: int, compute_ms: int, compute_budget_ms: int
) -> PreparedSignal:
    """Was token and compute use proportionate? 1.0 within budget, less the further over it."""
    used = _require_count("tokens_used", tokens_used)
    budget = _require_count("tokens_budget", tokens_budget)
    compute = _require_count("compute_ms", compute_ms)
    compute_budget = _require_count("compute_budget_ms", compute_budget_ms)
    return prepare_signal(
        agent_did,
        Dimension.RESOURCE_EFFICIENCY,
        resource_efficiency(used, budget, compute, compute_budget),
        "resource_monitor",
        details=f"tokens={used}/{budget}, compute={compute}/{compute_budget}ms",
    )


def output_quality_signal(
    agent_did: str, accepted: bool, consumer: str, rejection_reason: str | None = None
) -> PreparedSignal:
    """Did the downstream ``consumer`` accept the agent's output? 1.0 if so, else 0.0."""
    return prepare_signal(
        agent_did,
        Dimension.OUTPUT_QUALITY,
        1.0 if _require_bool("accepted", accepted) else 0.0,
        f"consumer:{_require_text('consumer', consumer)}",
        details=rejection_reason,
    )


def security_event_signal(agent_did: str, within_boundary: bool, event_type: str) -> PreparedSignal:
    """Did the agent stay within its trust boundary? 1.0 if so, else 0.0; from the monitor."""
    return prepare_signal(
        agent_did,
        Dimension.SECURITY_POSTURE,
        1.0 if _require_bool("within_boundary", within_boundary) else 0.0,
        "security_monitor",
        details=_require_text("event_type", event_type),
    )


def collaboration_signal(agent_did: str, handoff_successful: bool, peer_did: str) -> PreparedSignal:
    """Did a handoff between the agent and ``peer_did`` complete? 1.0 if so, else 0.0."""
    if not isinstance(peer_did, str) or DID_RE.match(peer_did) is None:
        raise InvalidSignal(
            "peer_did", f"{_shown(peer_did)} is not a DID: expected did:<method>:<id>"
        )
    return prepare_signal(
        agent_did,
        Dimension.COLLABORATION_HEALTH,
        1.0 if _require_bool("handoff_successful", handoff_successful) else 0.0,
        f"collaboration:{peer_did}",
    )
