"""Idle agents expire when TRUST_AGENT_TTL_DAYS is set: gone from the API, tombstoned on the
changelog (so a worker restoring from scratch does not bring them back), counted; an agent that
keeps sending signals stays."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import urllib.error
import urllib.request

from tests.support.kafka_io import consume, produce
from tests.support.signals import Fleet
from tests.support.worker import WorkerProcess

TTL_SECONDS = 10.0
SETTINGS = {
    "window_seconds": "1",
    "grace_seconds": "1",
    "partitions": "3",
    "agent_ttl_days": repr(TTL_SECONDS / 86_400),
    # A TTL must span three flush intervals (see Settings): the default 5 s is too long here.
    "state_flush_seconds": "2",
}


def _status(worker: WorkerProcess, did: str) -> int:
    try:
        with urllib.request.urlopen(f"{worker.base_url}/agents/{did}/score", timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code


async def _wait_for_statuses(
    worker: WorkerProcess, wanted: dict[str, int], timeout: float, what: str
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        found = {did: await asyncio.to_thread(_status, worker, did) for did in wanted}
        if found == wanted:
            return
        if time.monotonic() > deadline:
            wrong = {did: status for did, status in found.items() if status != wanted[did]}
            raise AssertionError(f"{what}: not within {timeout:.0f} s; still {wrong}")
        await asyncio.sleep(0.5)


async def test_idle_agents_expire_and_stay_gone_while_an_active_one_stays(
    kafka_bootstrap: str, spawn_worker, topic_prefix: str
) -> None:
    worker: WorkerProcess = spawn_worker(**SETTINGS)
    worker.wait_until_ready(timeout=120)
    fleet = Fleet(topic_prefix)
    idle = [f"did:mesh:idle-{i:02d}" for i in range(12)]
    active = "did:mesh:always-busy"
    await produce(
        kafka_bootstrap,
        [fleet.record(did, "output_quality", 0.9) for did in idle for _ in range(3)],
    )

    async def keep_busy() -> None:
        while True:
            await produce(kafka_bootstrap, [fleet.record(active, "policy_compliance", 1.0)])
            await asyncio.sleep(1.0)

    busy = asyncio.ensure_future(keep_busy())
    try:
        everyone = {did: 200 for did in [*idle, active]}
        await _wait_for_statuses(worker, everyone, 60, "every agent known")
        started = time.monotonic()
        gone = {**{did: 404 for did in idle}, active: 200}
        await _wait_for_statuses(worker, gone, 3 * TTL_SECONDS + 30, "idle agents removed")
        assert time.monotonic() - started >= TTL_SECONDS - 2, "removed before their TTL"

        # Each removal is a tombstone on the changelog; the busy agent has none.
        changelog = await consume(
            kafka_bootstrap,
            [f"{topic_prefix}trust.internal.agent-state"],
            until=lambda records: (
                {r.key for r in records if r.value is None} >= {did.encode() for did in idle}
            ),
            timeout=30,
            what="a tombstone for every idle agent",
        )
        assert active.encode() not in {r.key for r in changelog if r.value is None}
        removals = re.findall(r"removed (\d+) agents with no signal", worker.log_since_start())
        assert sum(int(n) for n in removals) == len(idle)

        # A worker restoring everything from the changelog does not bring them back.
        assert worker.terminate() == 0
        fresh: WorkerProcess = spawn_worker("w2", **SETTINGS)
        fresh.wait_until_ready(timeout=120)
        await _wait_for_statuses(fresh, gone, 30, "the same agents after a restore from scratch")
    finally:
        busy.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await busy
    assert "Traceback" not in worker.log
    assert "Traceback" not in fresh.log
