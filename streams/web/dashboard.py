"""The dashboard: a page served by every worker at ``/ui/``, and the event stream it follows.

The page is static (``streams/web/ui/``: HTML, plain JavaScript, CSS; no build step, nothing
fetched from elsewhere) and reads the same HTTP API as every other client, with the same tokens:
it holds them in the browser's session storage and sends them as ``Authorization`` headers, the
event stream's included (read with ``fetch``, so that no token ever travels in a URL). The page
itself carries no data, so it is served without a token, like the OpenAPI document; everything
it shows comes from requests that need one when ``TRUST_API_READ_TOKEN`` is set.

Every answer under ``/ui/`` carries a Content-Security-Policy that allows scripts, styles and
requests from the worker itself only and no inline script: text from the wire (DIDs, signal
sources, reasons) is inserted as text by the page, and the policy stops anything that got
through from running.

``GET /events``: the fleet's score updates and revocations as server-sent events
(:mod:`streams.web.events`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

from aiohttp import web
from faust.web import Request, View

from streams.kafka import clients
from streams.kafka.topics import TopicNames
from streams.settings import Settings
from streams.web.auth import CHALLENGE, Tokens
from streams.web.events import KEEPALIVE_SECONDS, EventHub

log = logging.getLogger(__name__)

#: The page's files, by name, with their content types.
ASSETS: Final = {
    "index.html": "text/html",
    "style.css": "text/css",
    "app.js": "text/javascript",
    "api.js": "text/javascript",
    "chart.js": "text/javascript",
    "views.js": "text/javascript",
}
CONTENT_SECURITY_POLICY: Final = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
UI_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}
STREAM_HEADERS: Final = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    # Proxies that buffer answers (nginx) would hold events back.
    "X-Accel-Buffering": "no",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str


def load_assets() -> dict[str, Asset]:
    """The page's files, read once from the package."""
    folder = resources.files("streams.web").joinpath("ui")
    return {
        name: Asset(folder.joinpath(name).read_bytes(), content_type)
        for name, content_type in ASSETS.items()
    }


def _asset_response(asset: Asset) -> web.Response:
    return web.Response(
        body=asset.body,
        content_type=asset.content_type,
        charset="utf-8",
        headers=UI_HEADERS,
    )


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


async def stream_events(hub: EventHub, tokens: Tokens, request: Any) -> web.StreamResponse:
    """One browser's event stream, until it goes away, falls behind, or the worker stops."""
    denied = tokens.check_read(request.headers.get("Authorization"))
    if denied is not None:
        return _error(denied.status, denied.message, CHALLENGE if denied.status == 401 else None)
    subscriber = hub.subscribe()
    if subscriber is None:
        return _error(
            503,
            f"this worker already streams to {hub.max_clients} browsers: try another worker",
            {"Retry-After": "10"},
        )
    response = web.StreamResponse(status=200, headers=STREAM_HEADERS)
    try:
        await response.prepare(request)
        await response.write(b": trust-streams events\n\n")
        while (chunk := await subscriber.next(KEEPALIVE_SECONDS)) is not None:
            await response.write(chunk)
    except (ConnectionError, RuntimeError):
        pass  # the browser went away (aiohttp: reset, or writing to a closed transport)
    finally:
        hub.unsubscribe(subscriber)
    return response


def install(app: Any, settings: Settings, tokens: Tokens) -> EventHub:
    """Serve the page at ``/ui/`` and the event stream at ``/events``."""
    assets = load_assets()
    names = TopicNames(settings.topic_prefix)
    hub = EventHub(
        clients.KafkaConnection.from_settings(settings),
        names.scores,
        names.revocations,
        settings.partitions,
    )

    async def close_streams(_: Any) -> None:
        await hub.close()

    # Before the web server waits for its handlers to finish: open streams would hold it up.
    app.web.web_app.on_shutdown.append(close_streams)

    @app.page("/ui")
    class UiRoot(View):
        async def get(self, request: Request) -> Any:
            return web.Response(status=308, headers={"Location": "/ui/", **UI_HEADERS})

    @app.page("/ui/")
    class UiIndex(View):
        async def get(self, request: Request) -> Any:
            return _asset_response(assets["index.html"])

    @app.page("/ui/{name}")
    class UiAsset(View):
        async def get(self, request: Request, name: str) -> Any:
            asset = assets.get(name)
            if asset is None:
                return web.Response(status=404, text="not found", headers=UI_HEADERS)
            return _asset_response(asset)

    @app.page("/events")
    class Events(View):
        async def get(self, request: Request) -> Any:
            return await stream_events(hub, tokens, request)

    return hub
