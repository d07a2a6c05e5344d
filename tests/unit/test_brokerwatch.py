"""The broker probe behind /readyz: not ready from the first failed probe until one answers."""

from __future__ import annotations

import asyncio

from streams.kafka.brokerwatch import BrokerWatch


class Probe:
    def __init__(self) -> None:
        self.error: Exception | None = None
        self.hang = False

    async def __call__(self) -> None:
        if self.hang:
            await asyncio.sleep(3600)
        if self.error is not None:
            raise self.error


async def test_ready_only_while_the_broker_answers() -> None:
    probe = Probe()
    watch = BrokerWatch(probe, timeout=0.05)
    await watch.check()
    assert watch.describe() == []
    probe.error = ConnectionError("connection refused")
    await watch.check()
    reasons = watch.describe()
    assert len(reasons) == 1 and "has not answered" in reasons[0]
    assert "connection refused" in reasons[0]
    since = watch.unreachable_since
    await watch.check()
    assert watch.unreachable_since == since  # the outage is dated from its first failure
    probe.error = None
    await watch.check()
    assert watch.describe() == [] and watch.unreachable_since is None


async def test_a_probe_that_hangs_counts_as_no_answer() -> None:
    probe = Probe()
    probe.hang = True
    watch = BrokerWatch(probe, timeout=0.05)
    await watch.check()
    assert watch.unreachable_since is not None and "TimeoutError" in watch.last_error
