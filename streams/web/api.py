"""The operators' HTTP API, served by every worker (Faust's web server).

Any worker answers for any agent: a request about one agent is forwarded to the worker that owns
the agent's partition (Faust's table routing, on the raw DID bytes, the same bytes producers
partition by); fleet-wide questions (agents at risk, the health report) are asked of every worker
and merged. Reads never create state: an unknown agent is a 404. Changes (configuration,
reinstatement) need ``Authorization: Bearer <TRUST_ADMIN_TOKEN>`` and travel through Kafka like
every other change, so every worker sees them in the same order.
"""

from __future__ import annotations

import asyncio
import hmac
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
from faust.web import Request, Response, View
from pydantic import ValidationError

from streams.kafka import clients
from streams.kafka.topics import TopicNames
from streams.messages import DID_RE, ReinstateCommand, iso_utc
from streams.processing.config_topic import (
    ConfigFollower,
    ConfigUpdate,
    _to_config,
    describe,
    publish_config,
)
from streams.processing.ownership import Ownership
from streams.scoring.agent import AgentState
from streams.scoring.formulas import contribution_points, trend
from streams.scoring.model import DIMENSIONS, InvalidScoringConfig, ScoringConfig, tier_for
from streams.settings import Settings
from streams.state.store import StateStore
from streams.web.openapi import document

DAY_MS = 24 * 60 * 60 * 1000


def summary(did: str, state: AgentState, config: ScoringConfig) -> dict[str, Any]:
    return {
        "agent_did": did,
        "total_score": state.score,
        "tier": tier_for(state.score).value,
        "at_risk": state.is_at_risk(config),
        "revoked": state.revoked,
        "config_version": config.version,
    }


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
            for d, v, s, t in state.recent_signals
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


class Api:
    """Reads the worker's own partitions; asks the other workers for theirs."""

    def __init__(
        self,
        app: Any,
        settings: Settings,
        store: StateStore,
        config: ConfigFollower,
        ownership: Ownership,
    ) -> None:
        self.app = app
        self.settings = settings
        self.store = store
        self.config = config
        self.ownership = ownership
        self.names = TopicNames(settings.topic_prefix)
        self.kafka = clients.KafkaConnection.from_settings(settings)

    def owned_partitions(self) -> list[int]:
        """Partitions whose state is restored here (one being taken over is not served yet)."""
        return sorted(self.ownership.owned)

    def state_of(self, did: str) -> AgentState | None:
        key = did.encode()
        for partition in self.owned_partitions():
            state = self.store.lookup(partition, key)
            if state is not None:
                return state
        return None

    def local_agents(self) -> list[tuple[str, AgentState]]:
        return [
            (key.decode(), state)
            for partition in self.owned_partitions()
            for key, state in self.store.iter_agents(partition)
        ]

    def other_workers(self) -> list[str]:
        own = str(self.app.conf.canonical_url).rstrip("/")
        hosts = self.app.router.tables_metadata().keys()
        return sorted(str(h).rstrip("/") for h in hosts if str(h).rstrip("/") != own)

    async def gather(self, path: str) -> list[Any]:
        """``path`` asked of every other worker (with ``local=1``): their JSON answers."""
        client = self.app.http_client

        async def ask(host: str) -> Any:
            async with client.get(f"{host}{path}", params={"local": "1"}) as response:
                response.raise_for_status()
                return orjson.loads(await response.read())

        return list(await asyncio.gather(*(ask(h) for h in self.other_workers())))

    def authorize(self, request: Request) -> tuple[int, str] | None:
        token = self.settings.admin_token.get_secret_value()
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return 401, "this change needs 'Authorization: Bearer <token>'"
        if not token:
            return 403, "changes are disabled: no TRUST_ADMIN_TOKEN is set on this worker"
        if not hmac.compare_digest(header.removeprefix("Bearer ").encode(), token.encode()):
            return 403, "the bearer token is not valid"
        return None


def _error(view: View, status: int, message: str) -> Response:
    return view.json({"error": message}, status=status)


def install(
    app: Any,
    settings: Settings,
    table: Any,
    store: StateStore,
    config: ConfigFollower,
    ownership: Ownership,
) -> Api:
    api = Api(app, settings, store, config, ownership)

    routed = app.table_route(table=table, match_info="did")
    openapi_document = document()

    @app.page("/openapi.json")
    class OpenApi(View):
        async def get(self, request: Request) -> Response:
            return self.json(openapi_document)

    def agent_page(path: str, render: Callable[[str, AgentState, ScoringConfig], Any]) -> None:
        """A read about one agent, answered by the worker that owns it."""

        @app.page(path)
        class AgentPage(View):
            @routed
            async def get(self, request: Request, did: str) -> Response:
                if not DID_RE.match(did):
                    return _error(self, 422, f"{did!r} is not a DID (did:<method>:<id>)")
                state = api.state_of(did)
                if state is None:
                    return _error(self, 404, f"unknown agent {did}")
                return self.json(render(did, state, config.current))

    agent_page("/agents/{did}/score", summary)
    agent_page("/agents/{did}/explanation", explanation)

    @app.page("/agents/at-risk")
    class AtRisk(View):
        async def get(self, request: Request) -> Response:
            current = config.current
            found = [
                summary(did, s, current) for did, s in api.local_agents() if s.is_at_risk(current)
            ]
            if request.query.get("local") != "1":
                for answer in await api.gather("/agents/at-risk"):
                    found += answer["agents"]
            found.sort(key=lambda a: (a["total_score"], a["agent_did"]))
            return self.json({"agents": found, "count": len(found)})

    @app.page("/health-report")
    class HealthReport(View):
        async def get(self, request: Request) -> Response:
            try:
                days = int(request.query.get("days", "7"))
                if not 1 <= days <= 3650:
                    raise ValueError
            except ValueError:
                return _error(self, 422, "days must be a whole number from 1 to 3650")
            cutoff = int(time.time() * 1000) - days * DAY_MS
            current = config.current
            agents: dict[str, Any] = {}
            totals = {"total_agents": 0, "revoked_agents": 0, "at_risk_agents": 0}
            for did, state in api.local_agents():
                totals["total_agents"] += 1
                totals["revoked_agents"] += state.revoked
                totals["at_risk_agents"] += state.is_at_risk(current)
                entry = health_entry(state, cutoff)
                if entry is not None:
                    agents[did] = entry
            if request.query.get("local") != "1":
                for answer in await api.gather(f"/health-report?days={days}"):
                    for name in totals:
                        totals[name] += answer[name]
                    agents.update(answer["agents"])
            return self.json({"period_days": days, **totals, "agents": agents})

    @app.page("/config")
    class Config(View):
        async def get(self, request: Request) -> Response:
            return self.json(describe(config.current))

        async def put(self, request: Request) -> Response:
            if denied := api.authorize(request):
                return _error(self, *denied)
            try:
                update = ConfigUpdate.model_validate_json(await request.read())
                proposed = _to_config(update, version=0)
            except ValidationError as exc:
                return _error(
                    self,
                    422,
                    "; ".join(
                        f"{'.'.join(str(p) for p in e['loc']) or '(body)'}: {e['msg']}"
                        for e in exc.errors(include_url=False)
                    ),
                )
            except InvalidScoringConfig as exc:
                return _error(self, 422, f"configuration rejected, nothing changed: {exc}")
            published = await publish_config(
                api.kafka,
                api.names.config,
                proposed,
                update.requested_by or "http",
            )
            return self.json(describe(published))

    @app.page("/agents/{did}/reinstate")
    class Reinstate(View):
        async def post(self, request: Request, did: str) -> Response:
            if denied := api.authorize(request):
                return _error(self, *denied)
            try:
                body = orjson.loads(await request.read() or b"{}")
                command = ReinstateCommand(
                    agent_did=did,
                    requested_by=str(body.get("requested_by") or "http"),
                    reason=body.get("reason", ""),
                    request_id=str(uuid.uuid4()),
                )
            except (orjson.JSONDecodeError, AttributeError):
                return _error(self, 400, "the body must be a JSON object with a 'reason'")
            except ValidationError as exc:
                first = exc.errors(include_url=False)[0]
                return _error(self, 422, f"{'.'.join(map(str, first['loc']))}: {first['msg']}")
            # A producer per request: changes are rare, and this one waits for its record alone.
            async with clients.producer(api.kafka, purpose="api-reinstate") as producer:
                await producer.send_and_wait(
                    api.names.commands, command.model_dump_json().encode(), key=did.encode()
                )
            return self.json(
                {
                    "accepted": True,
                    "request_id": command.request_id,
                    "audit_topic": api.names.revocations,
                },
                status=202,
            )

    return api
