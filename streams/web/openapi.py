"""The API's OpenAPI 3.1 document, built from pydantic models of every request and response."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from streams.messages import DID_PATTERN
from streams.processing.config_topic import ConfigUpdate
from streams.scoring.model import Dimension, Tier
from streams.web.pages import DEFAULT_PAGE, MAX_PAGE


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


class ReinstatementSummary(_Strict):
    reinstatement_id: str
    reinstated_at: str
    requested_by: str
    reason: str
    lifted_revocation_id: str
    lifted_reason: str | None = Field(description="The lifted revocation's reason, when known")


class Explanation(AgentSummary):
    dimensions: dict[Dimension, DimensionExplanation]
    recent_signals: list[RecentSignal]
    history: list[HistoryEntry] = Field(
        description="The total at each recalculation (window closes, critical signals), oldest "
        "first, the last 100"
    )
    trend: Literal["improving", "degrading", "stable"]
    revocation: RevocationSummary | None = Field(description="Set while the agent is revoked")
    reinstatement: ReinstatementSummary | None = Field(
        description="The revocation an operator lifted last, while not revoked again"
    )


class _Page(_Strict):
    count: Annotated[int, Field(ge=0)]
    next_cursor: str | None = Field(
        description="Pass as ?cursor= for the next page; null: this was the last page"
    )
    partial: bool = Field(description="Some workers or partitions are missing from this page")
    missing_workers: list[str] = Field(
        description="Advertised URLs of the workers that did not answer in time"
    )
    missing_partitions: list[int] = Field(
        description="Partitions no answering worker served (moving, restoring, or not answering)"
    )


class AtRisk(_Page):
    agents: list[AgentSummary] = Field(description="In DID order")


class HealthEntry(_Strict):
    current_score: int
    min_score: int
    max_score: int
    avg_score: float
    trend: Literal["improving", "degrading", "stable"]
    revoked: bool


class HealthReport(_Page):
    period_days: int
    total_agents: int | None = None
    revoked_agents: int | None = None
    at_risk_agents: int | None = None
    verified_partner_agents: int | None = None
    trusted_agents: int | None = None
    standard_agents: int | None = None
    probationary_agents: int | None = None
    untrusted_agents: int | None = None
    counted_at: str | None = Field(
        description="When the oldest of the counts was taken (each worker counts at most once a "
        "minute); null: some worker has not finished counting, and the totals leave it out"
    )
    agents: dict[str, HealthEntry] = Field(description="This page's agents, in DID order")


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
_READ_ERRORS = {
    "401": _json(ErrorBody, "TRUST_API_READ_TOKEN is set and no valid read or admin token came"),
}
_FORWARD_ERRORS = {
    "502": _json(ErrorBody, "the worker that owns the agent cannot be reached"),
    "503": _json(ErrorBody, "the agent's partition is moving or being restored: try again"),
    "504": _json(ErrorBody, "the worker that owns the agent did not answer in time"),
}
#: Reads: the read token, or the admin token (either one). Open when no read token is set.
_READS: list[dict[str, list[str]]] = [{"readToken": []}, {"adminToken": []}]
_ADMIN: list[dict[str, list[str]]] = [{"adminToken": []}]
_PAGE = [
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": DEFAULT_PAGE},
    },
    {
        "name": "cursor",
        "in": "query",
        "required": False,
        "description": "next_cursor of the previous page",
        "schema": {"type": "string"},
    },
]


def _read(summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "summary": summary,
        "security": _READS,
        "responses": {**responses, **_READ_ERRORS},
        **extra,
    }


def _open(summary: str, description: str, content_type: str) -> dict[str, Any]:
    return {
        "summary": summary,
        "security": [],  # probes and scrapers need no token; no agent appears here
        "responses": {"200": {"description": description, "content": {content_type: {}}}},
    }


def document() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for model in MODELS:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    agent = {"parameters": [_DID]}
    days = {
        "name": "days",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": 3650, "default": 7},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "trust-streams operators' API",
            "version": "1",
            "description": "Reads need the read token (TRUST_API_READ_TOKEN) or the admin token "
            "when a read token is set, and are open otherwise; changes always need the admin "
            "token (TRUST_ADMIN_TOKEN). /healthz, /readyz, /metrics and this document are open.",
        },
        "security": _READS,
        "paths": {
            "/agents/{did}/score": {
                "get": _read(
                    "An agent's current score",
                    {
                        "200": _json(AgentSummary, "the agent's score"),
                        "404": _json(ErrorBody, "unknown agent"),
                        **_ERRORS,
                        **_FORWARD_ERRORS,
                    },
                    **agent,
                )
            },
            "/agents/{did}/explanation": {
                "get": _read(
                    "Why the agent has the score it has",
                    {
                        "200": _json(Explanation, "per-dimension breakdown, signals, history"),
                        "404": _json(ErrorBody, "unknown agent"),
                        **_ERRORS,
                        **_FORWARD_ERRORS,
                    },
                    **agent,
                )
            },
            "/agents/at-risk": {
                "get": _read(
                    "Agents below the warning threshold and not revoked, a page at a time",
                    {"200": _json(AtRisk, "a page of agents at risk, in DID order"), **_ERRORS},
                    parameters=_PAGE,
                )
            },
            "/health-report": {
                "get": _read(
                    "Longitudinal health of the fleet over the last N days, a page at a time",
                    {"200": _json(HealthReport, "fleet counts and a page of agents"), **_ERRORS},
                    parameters=[days, *_PAGE],
                )
            },
            "/config": {
                "get": _read(
                    "The scoring configuration in force",
                    {"200": _json(ConfigView, "the configuration")},
                ),
                "put": {
                    "summary": "Replace the scoring configuration (validated first)",
                    "security": _ADMIN,
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
                    "security": _ADMIN,
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
            "/events": {
                "get": _read(
                    "The fleet's score updates and revocations as they are published "
                    "(server-sent events: 'score' and 'revocation' carry the topics' JSON as it "
                    "is, 'status' says whether the stream is live); never ends",
                    {
                        "200": {
                            "description": "the event stream",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}},
                        },
                        "503": _json(
                            ErrorBody, "this worker streams to as many browsers as it may"
                        ),
                    },
                )
            },
            "/healthz": {"get": _open("Alive", "the event loop answers", "application/json")},
            "/readyz": {
                "get": {
                    **_open(
                        "Ready: partitions restored, configuration read (503 until then)",
                        "ready",
                        "application/json",
                    ),
                    "responses": {
                        "200": {"description": "ready", "content": {"application/json": {}}},
                        "503": {
                            "description": "not ready: what it waits for",
                            "content": {"application/json": {}},
                        },
                    },
                }
            },
            "/metrics": {
                "get": _open(
                    "Prometheus metrics (labels: dimension, topic, partition, kind; no agent)",
                    "metrics in the text format",
                    "text/plain",
                )
            },
            "/openapi.json": {
                "get": _open("This document", "the OpenAPI document", "application/json")
            },
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "readToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "TRUST_API_READ_TOKEN: reads only",
                },
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "TRUST_ADMIN_TOKEN: changes, and reads",
                },
            },
        },
    }
