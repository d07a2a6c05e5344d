"""Whether the broker answers: what ``/readyz`` says while Kafka is away.

Why a probe of its own: a worker cut off from its broker keeps running (every client retries),
and with no signals arriving nothing it does fails, so nothing else would notice. Every few seconds
a small metadata request (for one topic, so its cost does not grow with the cluster) goes to a
broker through the producer's own connections; the worker is not ready until one answers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka.protocol.metadata import MetadataRequest

log = logging.getLogger(__name__)


class BrokerWatch:
    def __init__(
        self,
        probe: Callable[[], Awaitable[None]],
        *,
        interval: float = 2.0,
        timeout: float = 5.0,
    ) -> None:
        self._probe = probe
        self._interval = interval
        self._timeout = timeout
        #: When the broker stopped answering (monotonic), and why; None while it answers.
        self.unreachable_since: float | None = None
        self.last_error = ""

    def describe(self) -> list[str]:
        """Reasons the worker is not ready, for /readyz (none while the broker answers)."""
        if self.unreachable_since is None:
            return []
        silent = time.monotonic() - self.unreachable_since
        return [f"the Kafka broker has not answered for {silent:.0f} s ({self.last_error})"]

    async def check(self) -> None:
        try:
            await asyncio.wait_for(self._probe(), self._timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if self.unreachable_since is None:
                self.unreachable_since = time.monotonic()
                log.error("The Kafka broker does not answer (%s); not ready", self.last_error)
            return
        if self.unreachable_since is not None:
            log.warning(
                "The Kafka broker answers again after %.1f s",
                time.monotonic() - self.unreachable_since,
            )
            self.unreachable_since = None

    async def run(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(self._interval)


def metadata_probe(client: Callable[[], Any], topic: str) -> Callable[[], Awaitable[None]]:
    """A probe that asks a broker for ``topic``'s metadata through ``client()`` (an aiokafka
    AIOKafkaClient, e.g. a producer's)."""

    async def probe() -> None:
        kafka = client()
        node = kafka.get_random_node()
        if node is None:
            raise ConnectionError("no broker known")
        await kafka.send(node, MetadataRequest([topic]))

    return probe
