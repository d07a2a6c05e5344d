"""The API's OpenAPI 3.1 document, built from pydantic models of every request and response."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from streams.messages import DID_PATTERN
from streams.processing.config_topic import ConfigUpdate
from streams.scoring.model import Dimension, Tier


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(_Strict):
    error: str


class AgentSummary(_Strict):
    agent_did: str
    total_score: Annotated[int, Field(ge=0, le=1000)]
    tier: Tier
    at_risk: bool
    revoked: bool
    config_version: Annotated[int, Field(ge=0)]


class DimensionExplanation(_Strict):
    score: Annotated[float, Field(ge=0, le=100)]
    signal_count: Annotated[int, Field(ge=0)]
    window_signal_count: Annotated[int, Field(ge=0)]
    weight: Annotated[float, Field(ge=0, le=1)]
    contribution: Annotated[float, Field(ge=0, le=1000)]


class RecentSignal(_Strict):
    dimension: Dimension
    value: Annotated[float, Field(ge=0, le=1)]
    source: str
    timestamp: str


class HistoryEntry(_Strict):
    at: str
    score: Annotated[int, Field(ge=0, le=1000)]


class RevocationSummary(_Strict):
    revocation_id: str
    revoked_at: str
    reason: str


class Explanation(AgentSummary):
    dimensions: dict[Dimension, DimensionExplanation]
    recent_signals: list[RecentSignal]
    history: list[HistoryEntry]
    trend: Literal["improving", "degrading", "stable"]
    revocation: RevocationSummary | None


class AtRisk(_Strict):
    agents: list[AgentSummary]
    count: Annotated[int, Field(ge=0)]


class HealthEntry(_Strict):
    current_score: int
    min_score: int
    max_score: int
    avg_score: float
    trend: Literal["improving", "degrading", "stable"]
    revoked: bool


class HealthReport(_Strict):
    period_days: int
    total_agents: int
    revoked_agents: int
    at_risk_agents: int
    agents: dict[str, HealthEntry]


class FloorView(_Strict):
    floor: float
    min_signals: int


class ConfigView(_Strict):
    version: Annotated[int, Field(ge=0)]
    weights: dict[Dimension, float]
    revocation_threshold: int
    warning_threshold: int
    floors: dict[Dimension, FloorView]


class ReinstateRequest(_Strict):
    reason: Annotated[str, Field(min_length=1, max_length=2048)]
    requested_by: Annotated[str, Field(min_length=1, max_length=256)] | None = None


class ReinstateAccepted(_Strict):
    accepted: Literal[True]
    request_id: str
    audit_topic: str


MODELS: tuple[type[BaseModel], ...] = (
    ErrorBody, AgentSummary, Explanation, AtRisk, HealthReport, ConfigView, ConfigUpdate,
    ReinstateRequest, ReinstateAccepted,
)  # fmt: skip


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


_DID = {
    "name": "did",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": DID_PATTERN, "maxLength": 512},
}
_ERRORS = {"422": _json(ErrorBody, "malformed request")}
_AUTH_ERRORS = {
    "401": _json(ErrorBody, "no bearer token"),
    "403": _json(ErrorBody, "wrong bearer token, or changes disabled"),
}


def document() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for model in MODELS:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    agent = {"parameters": [_DID]}
    return {
        "openapi": "3.1.0",
        "info": {"title": "trust-streams operators' API", "version": "1"},
        "paths": {
            "/agents/{did}/score": {
                "get": {
                    **agent,
                    "summary": "An agent's current score",
                    "responses": {
                        "200": _json(AgentSummary, "the agent's score"),
                        "404": _json(ErrorBody, "unknown agent"),
                        **_ERRORS,
                    },
                }
            },
            "/agents/{did}/explanation": {
                "get": {
                    **agent,
                    "summary": "Why the agent has the score it has",
                    "responses": {
                        "200": _json(Explanation, "per-dimension breakdown, signals, history"),
                        "404": _json(ErrorBody, "unknown agent"),
                        **_ERRORS,
                    },
                }
            },
            "/agents/at-risk": {
                "get": {
                    "summary": "Agents below the warning threshold and not revoked",
                    "responses": {"200": _json(AtRisk, "agents at risk, lowest score first")},
                }
            },
            "/health-report": {
                "get": {
                    "summary": "Longitudinal health of the fleet over the last N days",
                    "parameters": [
                        {
                            "name": "days",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 3650},
                        }
                    ],
                    "responses": {"200": _json(HealthReport, "the report"), **_ERRORS},
                }
            },
            "/config": {
                "get": {
                    "summary": "The scoring configuration in force",
                    "responses": {"200": _json(ConfigView, "the configuration")},
                },
                "put": {
                    "summary": "Replace the scoring configuration (validated first)",
                    "security": [{"bearer": []}],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref(ConfigUpdate)}},
                    },
                    "responses": {
                        "200": _json(ConfigView, "accepted, with its version"),
                        **_AUTH_ERRORS,
                        **_ERRORS,
                    },
                },
            },
            "/agents/{did}/reinstate": {
                "post": {
                    **agent,
                    "summary": "Lift an agent's revocation (audited on the revocation topic)",
                    "security": [{"bearer": []}],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref(ReinstateRequest)}},
                    },
                    "responses": {
                        "202": _json(ReinstateAccepted, "queued for the agent's worker"),
                        "400": _json(ErrorBody, "the body is not a JSON object"),
                        **_AUTH_ERRORS,
                        **_ERRORS,
                    },
                }
            },
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
