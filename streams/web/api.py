"""The operators' HTTP API, served by every worker (Faust's web server).

Any worker answers for any agent: a request about one agent is answered by the worker that owns
the agent's partition, forwarded there when it is another (:mod:`streams.web.forwarding`, with a
timeout); fleet-wide questions (agents at risk, the health report) are asked of every worker at
once, a page at a time, and merged (:mod:`streams.web.pages`); a worker that does not answer in
time is named in a partial answer instead of holding it up. Reading many agents never holds up
scoring (:mod:`streams.web.scan`). Reads never create state: an unknown agent is a 404.

Reads need ``Authorization: Bearer <TRUST_API_READ_TOKEN>`` when that token is set; changes
(configuration, reinstatement) need ``TRUST_ADMIN_TOKEN``, which also grants reads (see
:mod:`streams.web.auth`). Changes travel through Kafka like every other change, so every worker
sees them in the same order.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from faust.web import Request, Response, View
from pydantic import ValidationError

from streams.kafka import clients
from streams.kafka.topics import TopicNames
from streams.messages import DID_RE, ReinstateCommand
from streams.processing.config_topic import (
    ConfigFollower,
    ConfigUpdate,
    _to_config,
    describe,
    publish_config,
)
from streams.processing.ownership import Ownership
from streams.scoring.agent import AgentState
from streams.scoring.model import InvalidScoringConfig, ScoringConfig
from streams.sdk.signals import partition_for
from streams.settings import Settings
from streams.state.store import StateStore
from streams.web.advertise import is_loopback
from streams.web.auth import CHALLENGE, Denied, Tokens
from streams.web.forwarding import FORWARDED, Forwarder, WorkerUnavailable
from streams.web.openapi import document
from streams.web.pages import (
    SCAN_BUDGET,
    BadRequest,
    LocalPage,
    decode_cursor,
    explanation,
    health_entry,
    merge_pages,
    page_body,
    parse_limit,
    summary,
    summary_of,
)
from streams.web.scan import FIRST_AGENT_KEY, TIER_ORDER, AgentScan, Census, Pacer, Stored

log = logging.getLogger(__name__)

DAY_MS = 24 * 60 * 60 * 1000
Render = Callable[[str, AgentState, ScoringConfig], Any]
LocalReader = Callable[[bytes, int, Request], Awaitable[LocalPage]]


class Api:
    """Reads the worker's own partitions; asks the other workers for theirs."""

    def __init__(
        self,
        app: Any,
        settings: Settings,
        store: StateStore,
        config: ConfigFollower,
        ownership: Ownership,
        *,
        table_name: str,
        own_url: str,
        scoring_busy: Callable[[], bool] = lambda: False,
    ) -> None:
        self.app = app
        self.settings = settings
        self.store = store
        self.config = config
        self.ownership = ownership
        self.names = TopicNames(settings.topic_prefix)
        self.kafka = clients.KafkaConnection.from_settings(settings)
        self.tokens = Tokens(read=settings.api_read_token, admin=settings.admin_token)
        self.timeout = settings.web_forward_timeout_seconds
        self.forwarder = Forwarder(app, table_name, own_url, self.timeout)
        self.scan = AgentScan(store, lambda: ownership.owned, busy=scoring_busy)
        self.pacer = Pacer(settings.api_fleet_pages_per_second)
        self.census = Census(self.scan, lambda: config.current.warning_threshold)

    # -- one agent -----------------------------------------------------------------------------

    async def agent(self, view: View, request: Request, did: str, render: Render) -> Response:
        """A read about one agent: answered here when this worker owns it, else by its owner."""
        if not DID_RE.match(did):
            return _error(view, 422, f"{did!r} is not a DID (did:<method>:<id>)")
        partition = partition_for(did, self.settings.partitions)
        if partition in self.ownership.owned:
            state = self.store.lookup(partition, did.encode())
            if state is None:
                return _error(view, 404, f"unknown agent {did}")
            return view.json(render(did, state, self.config.current))
        owner = self.forwarder.owner_of(did)
        if request.headers.get(FORWARDED) or owner is None or owner == self.forwarder.own_url:
            # Moving between workers, or being restored here: a moment's business.
            return view.json(
                {"error": f"partition {partition} is not being served right now: try again"},
                status=503,
                headers={"Retry-After": "1"},
            )
        try:
            answer = await self.forwarder.get(
                owner, request.rel_url.raw_path, {}, request.headers.get("Authorization")
            )
        except WorkerUnavailable as exc:
            status = 504 if "no answer" in exc.reason else 502
            return view.json(
                {"error": f"the worker that owns this agent, {exc.url}, {exc.reason}"},
                status=status,
            )
        return view.bytes(answer.body, content_type=answer.content_type, status=answer.status)

    # -- the fleet -----------------------------------------------------------------------------

    async def at_risk_page(self, start: bytes, limit: int, request: Request) -> LocalPage:
        current = self.config.current

        def visit(agent: Stored) -> dict[str, Any] | None:
            score, revoked = agent.score_and_revoked()
            if revoked or score >= current.warning_threshold:
                return None
            return summary_of(agent.did, score, revoked, current)

        found = await self.scan.scan(visit, start=start, limit=limit, budget=SCAN_BUDGET)
        stopped = None if found.stopped_at is None else found.stopped_at.decode(errors="replace")
        return LocalPage(found.found, stopped, found.partitions)

    async def health_page(self, start: bytes, limit: int, request: Request) -> LocalPage:
        cutoff = int(time.time() * 1000) - _days(request) * DAY_MS
        # Counts for the whole fleet come from the census; a small fleet is counted at once.
        counting = asyncio.ensure_future(self.census.counts(wait=self.timeout / 4))
        found = await self.scan.scan(
            lambda agent: health_entry(agent.state(), cutoff),
            start=start,
            limit=limit,
            budget=SCAN_BUDGET,
        )
        counts = await counting
        stopped = None if found.stopped_at is None else found.stopped_at.decode(errors="replace")
        page = LocalPage(found.found, stopped, found.partitions)
        if counts is not None:
            page.totals = {
                "total_agents": counts.agents,
                "revoked_agents": counts.revoked,
                "at_risk_agents": counts.at_risk,
                # Per tier, e.g. "trusted_agents": summed across workers like the others.
                **{
                    f"{tier.value}_agents": n
                    for tier, n in zip(TIER_ORDER, counts.by_tier, strict=False)
                },
            }
            page.counted_at = counts.at
        return page

    async def fleet(
        self,
        view: View,
        request: Request,
        read: LocalReader,
        params: dict[str, str],
        *,
        totals: bool = False,
    ) -> tuple[Response | None, dict[str, Any]]:
        """A page of a fleet-wide view: this worker's share and every other's, merged. Returns
        a response to send as it is (an error, or the share asked for by another worker), or
        None and the page's body."""
        try:
            limit = parse_limit(request.query.get("limit"))
            after = decode_cursor(request.query.get("cursor"))
            start = FIRST_AGENT_KEY if after is None else after.encode() + b"\x00"
            if request.headers.get(FORWARDED):
                await self.pacer.turn()
                return view.json((await read(start, limit, request)).to_json()), {}
        except BadRequest as exc:
            return _error(view, 422, str(exc)), {}
        params = {**params, "limit": str(limit)}
        if request.query.get("cursor"):
            params["cursor"] = request.query["cursor"]
        authorization = request.headers.get("Authorization")
        await self.pacer.turn()
        own, asked = await asyncio.gather(
            read(start, limit, request),
            self.forwarder.fan_out(request.rel_url.path, params, authorization),
        )
        pages = [own]
        missing = list(asked.missing)
        for url, body in asked.answers.items():
            try:
                pages.append(LocalPage.from_json(body))
            except ValueError:
                missing.append(url)
        merged = merge_pages(pages, limit, self.settings.partitions)
        body = page_body(merged, missing, items_as="map" if totals else "list")
        if totals:
            body.update(merged.totals)
            body["counted_at"] = None if merged.counted_at is None else _iso(merged.counted_at)
        return None, body


def _days(request: Request) -> int:
    try:
        days = int(request.query.get("days", "7"))
    except ValueError:
        days = 0
    if not 1 <= days <= 3650:
        raise BadRequest("days must be a whole number from 1 to 3650")
    return days


def _iso(epoch_seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_seconds))


def _error(view: View, status: int, message: str) -> Response:
    return view.json({"error": message}, status=status)


def _denied(view: View, denied: Denied) -> Response:
    headers = CHALLENGE if denied.status == 401 else None
    return view.json({"error": denied.message}, status=denied.status, headers=headers)


def install(
    app: Any,
    settings: Settings,
    table: Any,
    store: StateStore,
    config: ConfigFollower,
    ownership: Ownership,
    own_url: str,
    scoring_busy: Callable[[], bool] = lambda: False,
) -> Api:
    api = Api(
        app,
        settings,
        store,
        config,
        ownership,
        table_name=table.name,
        own_url=own_url,
        scoring_busy=scoring_busy,
    )
    if not api.tokens.reads_protected and not is_loopback(settings.web_host):
        log.warning(
            "The HTTP API listens on %s and anyone who reaches it can read every agent's score "
            "and signals: set TRUST_API_READ_TOKEN",
            settings.web_host,
        )
    openapi_document = document()

    def reads(handler: Callable[..., Awaitable[Response]]) -> Callable[..., Awaitable[Response]]:
        """A read: refused with 401 unless the read (or admin) token is presented, when set."""

        @functools.wraps(handler)
        async def guarded(view: View, request: Request, *args: Any, **kwargs: Any) -> Response:
            denied = api.tokens.check_read(request.headers.get("Authorization"))
            if denied is not None:
                return _denied(view, denied)
            return await handler(view, request, *args, **kwargs)

        return guarded

    @app.page("/openapi.json")
    class OpenApi(View):
        async def get(self, request: Request) -> Response:
            return self.json(openapi_document)

    def agent_page(path: str, render: Render) -> None:
        @app.page(path)
        class AgentPage(View):
            @reads
            async def get(self, request: Request, did: str) -> Response:
                return await api.agent(self, request, did, render)

    agent_page("/agents/{did}/score", summary)
    agent_page("/agents/{did}/explanation", explanation)

    @app.page("/agents/at-risk")
    class AtRisk(View):
        @reads
        async def get(self, request: Request) -> Response:
            ready, body = await api.fleet(self, request, api.at_risk_page, {})
            return ready if ready is not None else self.json(body)

    @app.page("/health-report")
    class HealthReport(View):
        @reads
        async def get(self, request: Request) -> Response:
            try:
                days = _days(request)
            except BadRequest as exc:
                return _error(self, 422, str(exc))
            ready, body = await api.fleet(
                self, request, api.health_page, {"days": str(days)}, totals=True
            )
            return ready if ready is not None else self.json({"period_days": days, **body})

    @app.page("/config")
    class Config(View):
        @reads
        async def get(self, request: Request) -> Response:
            return self.json(describe(config.current))

        async def put(self, request: Request) -> Response:
            if denied := api.tokens.check_admin(request.headers.get("Authorization")):
                return _denied(self, denied)
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
            if denied := api.tokens.check_admin(request.headers.get("Authorization")):
                return _denied(self, denied)
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
