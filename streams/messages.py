"""The wire contract: every message the service reads or writes, as a pydantic model.

``schemas/*.schema.json`` is generated from these models (``python -m streams schemas``) and a test
fails when the two drift apart. The worker builds outgoing messages as plain dicts on its hot path;
tests validate what it publishes against these models.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from streams.scoring.model import Dimension, Tier

#: W3C DID syntax: did:<method>:<method-specific-id>, idchar = ALPHA / DIGIT / "." / "-" / "_" /
#: pct-encoded, colons allowed inside the method-specific id but not at its end.
DID_PATTERN = (
    r"^did:[a-z0-9]+:(?:(?:[A-Za-z0-9._-]|%[0-9A-Fa-f]{2})*:)*"
    r"(?:[A-Za-z0-9._-]|%[0-9A-Fa-f]{2})+$"
)
DID_RE = re.compile(DID_PATTERN)
MAX_DID_LENGTH = 512

AgentDid = Annotated[
    str,
    Field(
        pattern=DID_PATTERN,
        max_length=MAX_DID_LENGTH,
        description="The agent's W3C DID, e.g. did:mesh:agent-42",
        examples=["did:mesh:agent-42"],
    ),
]
Score = Annotated[int, Field(ge=0, le=1000)]
EpochTime = Annotated[datetime, Field(description="ISO 8601, UTC")]


class Signal(BaseModel):
    """One judgement of one agent action, on the topic of its dimension."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    agent_did: AgentDid
    value: Annotated[
        float,
        Field(strict=True, ge=0.0, le=1.0, allow_inf_nan=False, description="0.0 bad .. 1.0 good"),
    ]
    source: Annotated[str, Field(min_length=1, max_length=256)]
    dimension: Dimension | None = Field(
        default=None, description="If present it must name the topic's dimension."
    )
    details: Annotated[str, Field(max_length=8192)] | None = None
    trace_id: Annotated[str, Field(max_length=256)] | None = None
    signal_id: Annotated[str, Field(max_length=256)] | None = None
    timestamp: AwareDatetime | None = Field(
        default=None,
        strict=True,
        description="When the action was judged, ISO 8601 with a zone; absent: the record's time.",
    )

    @field_validator("source")
    @classmethod
    def _source_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("source must not be blank")
        return value


class DimensionScore(BaseModel):
    model_config = ConfigDict(extra="forbid")

    score: Annotated[float, Field(ge=0, le=100)]
    signal_count: Annotated[int, Field(ge=0, description="Lifetime signals of this dimension")]
    window_signal_count: Annotated[int, Field(ge=0, description="Signals stamped in this window")]


Dimensions = dict[Dimension, DimensionScore]


class ScoreUpdate(BaseModel):
    """An agent's score when one of its windows closed. Dedupe on (agent_did, window_start)."""

    model_config = ConfigDict(extra="forbid")

    agent_did: AgentDid
    window_start: EpochTime
    window_end: EpochTime
    total_score: Score
    previous_score: Score
    score_change: Annotated[int, Field(ge=-1000, le=1000)]
    tier: Tier
    at_risk: bool
    revoked: bool
    dimensions: Dimensions
    signals_in_window: Annotated[int, Field(ge=0)]
    late_signals: Annotated[int, Field(ge=0)]
    weights_version: Annotated[int, Field(ge=0)]
    computed_at: EpochTime


class SignalTriggerInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["signal"]
    signal_id: str | None
    topic: str
    partition: Annotated[int, Field(ge=0)]
    offset: Annotated[int, Field(ge=0)]


class WindowTriggerInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["window"]
    window_start: EpochTime
    window_end: EpochTime


class RevocationEvent(BaseModel):
    """An agent's credentials are revoked. The same revocation always carries the same id."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["revoked"] = "revoked"
    revocation_id: str
    agent_did: AgentDid
    revoked_at: EpochTime
    total_score: Score
    threshold: Score
    reason: str
    dimensions: dict[Dimension, Annotated[float, Field(ge=0, le=100)]]
    trigger: Annotated[SignalTriggerInfo | WindowTriggerInfo, Field(discriminator="kind")]
    weights_version: Annotated[int, Field(ge=0)]


class ReinstateCommand(BaseModel):
    """An operator's request to lift an agent's revocation (internal commands topic)."""

    model_config = ConfigDict(extra="forbid")

    command: Literal["reinstate"] = "reinstate"
    agent_did: AgentDid
    requested_by: Annotated[str, Field(min_length=1, max_length=256)]
    reason: Annotated[str, Field(min_length=1, max_length=2048)]
    request_id: Annotated[str, Field(max_length=256)] | None = None


def read_command(
    value: bytes | None, partition: int, partition_of: Callable[[bytes], int]
) -> ReinstateCommand | str:
    """The command a record of the commands topic carries, or why it is not one.

    A command is applied by the worker that owns its agent's partition, in order with the agent's
    signals; one written to another partition would be applied nowhere (or, for a forged record,
    to an agent that lives elsewhere), so it is refused.
    """
    if value is None:
        return "record has no value"
    try:
        command = ReinstateCommand.model_validate_json(value)
    except ValidationError as exc:
        # Bounded: the names of unknown members are quoted, and a forged record chooses them.
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])[:100] or '(record)'}: {e['msg'][:200]}"
            for e in exc.errors(include_url=False)[:3]
        )
    expected = partition_of(command.agent_did.encode())
    if partition != expected:
        return (
            f"written to partition {partition}, but agent {command.agent_did!r} lives on "
            f"partition {expected}"
        )
    return command


class ReinstatementEvent(BaseModel):
    """Audit record on the revocation topic: an operator lifted the agent's revocation."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["reinstated"] = "reinstated"
    reinstatement_id: str
    agent_did: AgentDid
    reinstated_at: EpochTime
    lifted_revocation_id: str
    requested_by: str
    reason: str
    request_id: str | None


class DeadLetter(BaseModel):
    """A record the worker could not apply, with the reason. Key and value are kept up to a bound
    (so that a dead letter always fits in a record the broker accepts), with the original's size
    and SHA-256 so the whole can be matched to the record refused."""

    model_config = ConfigDict(extra="forbid")

    topic: str
    partition: Annotated[int, Field(ge=0)]
    offset: Annotated[int, Field(ge=0)]
    key: str | None = Field(description="The key (or its first bytes): UTF-8 text or base64")
    key_encoding: Literal["utf-8", "base64"] | None
    key_size: Annotated[int, Field(ge=0)] | None = Field(description="Bytes in the original key")
    key_sha256: str | None
    key_truncated: bool
    timestamp: EpochTime | None
    value: str | None = Field(description="The value (or its first bytes): UTF-8 text or base64")
    value_encoding: Literal["utf-8", "base64"] | None
    value_size: Annotated[int, Field(ge=0)] | None = Field(
        description="Bytes in the original value"
    )
    value_sha256: str | None = Field(description="Hex SHA-256 of the original value")
    value_truncated: bool = Field(description="True when only the first bytes are kept")
    error_kind: str = Field(
        description=(
            "invalid_json, not_an_object, missing_field, invalid_field, dimension_mismatch, "
            "missing_key, key_mismatch, empty_value, too_large, wrong_partition, "
            "invalid_timestamp, invalid_command"
        )
    )
    error: str
    received_at: EpochTime


#: The instants ISO 8601 (and Python's datetime) can write: years 1 to 9999.
FIRST_FORMATTABLE_MS = -62_135_596_800_000
LAST_FORMATTABLE_MS = 253_402_300_799_999


def iso_utc(epoch_ms: int) -> str:
    """Epoch ms as ISO 8601 UTC with millisecond precision and a 'Z'.

    Total: inputs are checked where they enter, but a time that cannot be written (a stored value
    from before those checks, a forged record) is shown at the nearest end of the range rather
    than failing the output or the request that shows it.
    """
    clamped = min(max(epoch_ms, FIRST_FORMATTABLE_MS), LAST_FORMATTABLE_MS)
    seconds, millis = divmod(clamped, 1000)
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds, milliseconds=millis)
    return moment.isoformat(timespec="milliseconds")[:-6] + "Z"


def message_models() -> dict[str, type[BaseModel]]:
    """Every wire model by schema file stem."""
    from streams.processing.config_topic import ConfigUpdate

    return {
        "signal": Signal,
        "score_update": ScoreUpdate,
        "revocation": RevocationEvent,
        "dead_letter": DeadLetter,
        "config_update": ConfigUpdate,
        "reinstate_command": ReinstateCommand,
        "reinstatement": ReinstatementEvent,
    }


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
