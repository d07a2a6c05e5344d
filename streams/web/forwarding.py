"""Asking other workers: a request about one agent forwarded to the worker that owns it, and a
fleet-wide question asked of every worker at once; each bounded by a timeout.

Who owns what comes from the consumer group's assignment, which every worker receives with each
worker's advertised URL (Faust's partition assignor; see :mod:`streams.web.advertise`); the
request itself goes out on Faust's HTTP client session. Faust's own forwarding
(``app.table_route``) is not used: it has no timeout, so one stopped worker would hold every
request routed to it for as long as the operating system keeps the connection waiting.

A forwarded request carries :data:`FORWARDED` and is answered where it arrives, never forwarded
again: while a partition moves, two workers' views of the assignment can disagree, and a request
must not bounce between them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from streams.errors import TrustServiceError

log = logging.getLogger(__name__)

#: Marks a request one worker sends another.
FORWARDED = "X-Trust-Forwarded"
#: How often a worker that does not answer is logged (seconds), per worker.
LOG_EVERY = 30.0


@dataclass(slots=True)
class Answer:
    """Another worker's answer, as it came."""

    status: int
    body: bytes
    content_type: str


@dataclass(slots=True)
class FanOut:
    """Every other worker's JSON answer, and the workers that gave none in time."""

    answers: dict[str, Any] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)


class WorkerUnavailable(TrustServiceError):
    """The worker asked gave no answer in time (or could not be reached)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason


class Forwarder:
    def __init__(self, app: Any, table_name: str, own_url: str, timeout_seconds: float) -> None:
        self.app = app
        self.table_name = table_name
        self.own_url = own_url.rstrip("/")
        self.timeout_seconds = timeout_seconds
        self._logged: dict[str, float] = {}

    def owner_of(self, did: str) -> str | None:
        """The advertised URL of the worker whose partition holds ``did`` (None: no assignment
        is known yet)."""
        try:
            return str(self.app.router.key_store(self.table_name, did)).rstrip("/")
        except KeyError:
            return None

    def others(self) -> list[str]:
        """Every other worker in the group, by advertised URL."""
        hosts = self.app.router.tables_metadata().keys()
        return sorted({str(h).rstrip("/") for h in hosts} - {self.own_url})

    def _timeout(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=self.timeout_seconds)

    def _headers(self, authorization: str | None) -> dict[str, str]:
        headers = {FORWARDED: "1"}
        if authorization:
            headers["Authorization"] = authorization  # the owner checks it again
        return headers

    async def get(
        self,
        url: str,
        path: str,
        params: Mapping[str, str],
        authorization: str | None,
    ) -> Answer:
        """GET ``path`` of the worker at ``url``; :class:`WorkerUnavailable` when it gives no
        answer within the timeout."""
        try:
            async with self.app.http_client.get(
                f"{url}{path}",
                params=dict(params),
                headers=self._headers(authorization),
                timeout=self._timeout(),
                allow_redirects=False,
            ) as response:
                return Answer(response.status, await response.read(), response.content_type)
        except TimeoutError as exc:
            self._note(url, f"no answer within {self.timeout_seconds:g} s")
            raise WorkerUnavailable(url, f"no answer within {self.timeout_seconds:g} s") from exc
        except (aiohttp.ClientError, OSError) as exc:
            self._note(url, str(exc) or type(exc).__name__)
            raise WorkerUnavailable(url, f"cannot be reached ({type(exc).__name__})") from exc

    async def fan_out(
        self, path: str, params: Mapping[str, str], authorization: str | None
    ) -> FanOut:
        """``path`` asked of every other worker at once; their JSON answers, and the workers
        that did not give a 200 with JSON within the timeout."""
        others = self.others()
        results = await asyncio.gather(
            *(self.get(url, path, params, authorization) for url in others),
            return_exceptions=True,
        )
        out = FanOut()
        for url, result in zip(others, results, strict=True):
            if isinstance(result, asyncio.CancelledError):
                raise result
            if isinstance(result, Answer) and result.status == 200:
                try:
                    out.answers[url] = orjson.loads(result.body)
                    continue
                except orjson.JSONDecodeError:
                    self._note(url, "answered with something that is not JSON")
            elif isinstance(result, Answer):
                self._note(url, f"answered {result.status}")
            elif not isinstance(result, WorkerUnavailable):
                self._note(url, repr(result))
            out.missing.append(url)
        return out

    def _note(self, url: str, what: str) -> None:
        now = time.monotonic()
        if now - self._logged.get(url, -LOG_EVERY) >= LOG_EVERY:
            self._logged[url] = now
            log.warning("Worker %s left out of an API answer: %s", url, what)
