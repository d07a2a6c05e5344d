"""Asking other workers, over real HTTP on loopback: answers, timeouts, and who is missing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from streams.web.forwarding import FORWARDED, Forwarder, WorkerUnavailable


@dataclass
class Router:
    urls: list[str]

    def tables_metadata(self) -> dict[str, Any]:
        return {url: {} for url in self.urls}

    def key_store(self, table: str, key: str) -> str:
        if not self.urls:
            raise KeyError(key)
        return self.urls[0] + "/"


@dataclass
class FakeApp:
    router: Router
    http_client: aiohttp.ClientSession
    seen: list[dict[str, str]] = field(default_factory=list)


async def _serve(handler: Any) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


@pytest.fixture
async def workers() -> AsyncIterator[dict[str, str]]:
    """Three other workers: one answers, one never does, one answers 500."""
    seen: list[dict[str, str]] = []
    stall = asyncio.Event()

    async def good(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.json_response({"path": request.path, "query": dict(request.query)})

    async def stuck(request: web.Request) -> web.Response:
        await stall.wait()
        return web.json_response({})

    async def broken(request: web.Request) -> web.Response:
        return web.json_response({"error": "x"}, status=500)

    runners = []
    urls = {}
    for name, handler in (("good", good), ("stuck", stuck), ("broken", broken)):
        runner, url = await _serve(handler)
        runners.append(runner)
        urls[name] = url
    urls["seen"] = seen  # type: ignore[assignment]
    yield urls
    stall.set()
    for runner in runners:
        await runner.cleanup()


async def test_fan_out_answers_within_the_timeout_naming_who_did_not(
    workers: dict[str, Any],
) -> None:
    own = "http://127.0.0.1:1"
    async with aiohttp.ClientSession() as session:
        router = Router([own, workers["good"], workers["stuck"], workers["broken"]])
        forwarder = Forwarder(FakeApp(router, session), "t", own + "/", timeout_seconds=0.5)
        assert forwarder.others() == sorted([workers["good"], workers["stuck"], workers["broken"]])
        started = time.monotonic()
        out = await forwarder.fan_out("/agents/at-risk", {"limit": "5"}, "Bearer tok")
        took = time.monotonic() - started
    assert took < 2.0
    assert out.answers == {workers["good"]: {"path": "/agents/at-risk", "query": {"limit": "5"}}}
    assert sorted(out.missing) == sorted([workers["stuck"], workers["broken"]])
    headers = workers["seen"][0]
    assert headers["Authorization"] == "Bearer tok" and headers[FORWARDED] == "1"


async def test_a_forward_to_a_worker_that_does_not_answer_times_out(
    workers: dict[str, Any],
) -> None:
    async with aiohttp.ClientSession() as session:
        forwarder = Forwarder(FakeApp(Router([]), session), "t", "http://me:1", 0.3)
        assert forwarder.owner_of("did:m:a") is None  # no assignment yet
        answer = await forwarder.get(workers["good"], "/agents/did:m:a/score", {}, None)
        assert answer.status == 200 and b"/agents/did:m:a/score" in answer.body
        started = time.monotonic()
        with pytest.raises(WorkerUnavailable) as unavailable:
            await forwarder.get(workers["stuck"], "/x", {}, None)
        assert time.monotonic() - started < 1.5
        assert unavailable.value.url == workers["stuck"]
        assert "no answer within 0.3 s" in unavailable.value.reason
        with pytest.raises(WorkerUnavailable) as refused:
            await forwarder.get("http://127.0.0.1:9", "/x", {}, None)  # nothing listens there
        assert "cannot be reached" in refused.value.reason
