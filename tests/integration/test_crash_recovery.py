"""Durability: workers killed with SIGKILL mid-stream lose nothing and count nothing twice."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict

from tests.oracle import DIMENSIONS, OracleAgent
from tests.support.kafka_io import consume, produce
from tests.support.outcomes import steady_stream
from tests.support.signals import Fleet, dedupe_updates, iso_ms, latest_update_per_agent
from tests.support.worker import WorkerProcess


def _accounted(updates: list[dict]) -> dict[str, int]:  # type: ignore[type-arg]
    """Signals each agent's updates account for: on time in their window, or late in a later one."""
    counted: dict[str, int] = defaultdict(int)
    for update in updates:
        counted[update["agent_did"]] += update["signals_in_window"] + update["late_signals"]
    return counted


async def _wait_for_every_signal(
    bootstrap: str, prefix: str, fleet: Fleet, timeout: float
) -> tuple[list[dict], list[dict]]:  # type: ignore[type-arg]
    expected = {did: fleet.signal_count(did) for did in fleet.sent}

    def complete(records: list) -> bool:  # type: ignore[type-arg]
        deduped = dedupe_updates([r.json() for r in records])
        return _accounted(list(deduped.values())) == expected

    records = await consume(
        bootstrap,
        [f"{prefix}trust.scores"],
        until=complete,
        timeout=timeout,
        what="updates accounting for every signal exactly once",
    )
    all_updates = [r.json() for r in records]
    return all_updates, list(dedupe_updates(all_updates).values())


async def _check_final_state(bootstrap: str, prefix: str, fleet: Fleet, timeout: float) -> None:
    _, updates = await _wait_for_every_signal(bootstrap, prefix, fleet, timeout)
    latest = latest_update_per_agent(updates)
    revoked_expected = set()
    for did in fleet.sent:
        oracle = OracleAgent.replay(fleet.sent[did])
        final = latest[did]
        assert final["total_score"] == oracle.total_score, did
        for d in DIMENSIONS:
            assert final["dimensions"][d]["signal_count"] == oracle.lifetime_counts[d], (did, d)
            assert final["dimensions"][d]["score"] == oracle.dimension_scores()[d], (did, d)
        if oracle.revoked:
            revoked_expected.add(did)
        assert final["revoked"] is oracle.revoked, did
    # Every window of an agent appears at most once after dedupe, and windows are distinct.
    windows_per_agent: dict[str, list[int]] = defaultdict(list)
    for update in updates:
        windows_per_agent[update["agent_did"]].append(iso_ms(update["window_start"]))
    assert all(len(w) == len(set(w)) for w in windows_per_agent.values())

    revocations = await consume(
        bootstrap,
        [f"{prefix}trust.revocations"],
        until=lambda r: {x.json()["agent_did"] for x in r} >= revoked_expected,
        timeout=30,
        what="a revocation for every agent the oracle revokes",
    )
    by_agent: dict[str, dict] = {}  # type: ignore[type-arg]
    for record in revocations:
        body = record.json()
        first = by_agent.setdefault(body["agent_did"], body)
        assert first == body, f"a repeated revocation differs:\n{first}\n{body}"
    assert set(by_agent) == revoked_expected
    return None


async def test_sigkill_three_times_during_100k_signals_loses_and_doubles_nothing(
    kafka_bootstrap: str, spawn_worker, topic_prefix: str
) -> None:
    rng = random.Random(424242)
    worker: WorkerProcess = spawn_worker(window_seconds="2", grace_seconds="1")
    worker.wait_until_assigned(timeout=120)
    fleet = Fleet(topic_prefix)
    agents = [f"did:mesh:crash-{i:05d}" for i in range(2000)]
    chunks = [steady_stream(fleet, rng, agents, 4000) for _ in range(25)]
    assert sum(len(c) for c in chunks) >= 100_000

    async def produce_stream() -> None:
        for chunk in chunks:
            await produce(kafka_bootstrap, chunk)
            await asyncio.sleep(0.6)

    producing = asyncio.create_task(produce_stream())
    kills = 0
    for _ in range(3):
        await asyncio.sleep(rng.uniform(3.0, 6.0))
        worker.kill()
        kills += 1
        worker.start()
    await producing
    assert kills == 3
    assert "Traceback" not in worker.log_since_start()

    await _check_final_state(kafka_bootstrap, topic_prefix, fleet, timeout=240)
    assert worker.running()


async def test_second_worker_takes_over_a_killed_workers_partitions_and_windows(
    kafka_bootstrap: str, spawn_worker, topic_prefix: str
) -> None:
    rng = random.Random(99)
    settings = {"window_seconds": "2", "grace_seconds": "1", "partitions": "4"}
    first = spawn_worker("w1", **settings)
    first.wait_until_assigned(timeout=120)
    second = spawn_worker("w2", **settings)
    second.wait_for_log("Assigned partitions", timeout=120)
    first.wait_for_log("Assigned partitions [", timeout=60)
    fleet = Fleet(topic_prefix)
    agents = [f"did:mesh:failover-{i:04d}" for i in range(1000)]

    for _ in range(4):
        await produce(kafka_bootstrap, steady_stream(fleet, rng, agents, 2000))
        await asyncio.sleep(0.5)
    assert "Assigned partitions [0, 1, 2, 3]" not in second.log, "w2 was never sharing the load"
    first.kill()
    for _ in range(4):
        await produce(kafka_bootstrap, steady_stream(fleet, rng, agents, 2000))
        await asyncio.sleep(0.5)

    # The survivor had half the partitions, and ends up owning every one, restored from the
    # changelog.
    second.wait_for_log("Assigned partitions [0, 1, 2, 3]", timeout=90)
    await _check_final_state(kafka_bootstrap, topic_prefix, fleet, timeout=180)
    assert second.running()
    assert "Traceback" not in second.log


async def test_a_worker_killed_twice_then_replaced_from_the_changelog_alone_loses_nothing(
    kafka_bootstrap: str, spawn_worker, topic_prefix: str
) -> None:
    """Local state never runs ahead of the changelog. Killed right after a burst, a worker
    restarts on its own database and goes on; killed again, it is replaced by a worker with an
    empty state directory, which has only the changelog. Were anything written locally before
    the changelog confirmed it, the restarted worker would resume from positions the changelog
    lacks and the replacement would restore older states with those newer positions: the
    signals in between would be missing from its scores."""
    rng = random.Random(2718)
    settings = {"window_seconds": "2", "grace_seconds": "1", "partitions": "4"}
    first = spawn_worker("w1", **settings)
    first.wait_until_assigned(timeout=120)
    fleet = Fleet(topic_prefix)
    agents = [f"did:mesh:prefix-{i:04d}" for i in range(1500)]

    for kill_after in (rng.uniform(0.3, 1.0), rng.uniform(0.3, 1.0)):
        await produce(kafka_bootstrap, steady_stream(fleet, rng, agents, 15_000))
        await asyncio.sleep(kill_after)  # mid-batch: states sent, not all confirmed
        first.kill()
        first.start()  # on its own database
        first.wait_until_assigned(timeout=120)
    await produce(kafka_bootstrap, steady_stream(fleet, rng, agents, 5_000))
    await asyncio.sleep(rng.uniform(0.3, 1.0))
    first.kill()

    replacement = spawn_worker("w2", **settings)  # a state directory of its own: empty
    replacement.wait_until_assigned(timeout=120)
    await _check_final_state(kafka_bootstrap, topic_prefix, fleet, timeout=240)
    assert replacement.running()
    assert "Traceback" not in replacement.log
