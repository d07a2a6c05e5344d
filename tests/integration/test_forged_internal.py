"""Forged records on the internal topics (ticks, commands, configuration) change nothing.

While a fleet sends signals window after window, forged and malformed ticks (far past, year 10000,
an hour ahead, absurd integers, floats, strings, non-JSON, deep nesting), commands and
configurations are written to the worker's own topics. The worker must never restart, windows
must keep closing on time (not early, not late), no on-time signal may count as late, scores stay
exactly the oracle's under the configuration in force, and no revocation is lifted.
"""

from __future__ import annotations

import asyncio
import random
import time
import urllib.parse
from collections import Counter

from streams.messages import ScoreUpdate
from streams.processing.config_topic import publish_config
from streams.scoring.model import DEFAULT_WEIGHTS, ScoringConfig
from tests.support.fleet import (
    FleetScript,
    agent_did,
    assert_update_matches,
    behaviour_of,
    window_signals,
)
from tests.support.forged import (
    forged_commands,
    forged_configs,
    forged_tick_values,
    future_tick,
    reinstatement_forgeries,
    unknown_agent_command,
)
from tests.support.hostile import MAX_DEAD_LETTER_BYTES, letter_position, produce_to
from tests.support.kafka_io import Record, consume, produce
from tests.support.outcomes import read_to_end
from tests.support.signals import Fleet, iso_ms
from tests.support.web import get, metric_sum, wait_for_page
from tests.support.worker import WorkerProcess

PARTITIONS = 3
WINDOW_S = 3
GRACE_S = 1
#: Each window's signals go out once the previous window has closed (at 1 s), before this one ends.
SEND_AT_S = 1.8
WINDOWS = 6
#: A window's update must be out within this long after its end plus the grace period.
CLOSE_WITHIN_MS = 1000


async def sleep_until_next_window(window_s: float, into: float) -> int:
    """Sleep until ``into`` s into the next window; return that window's start (ms)."""
    size_ms = int(window_s * 1000)
    now_ms = time.time() * 1000
    start = (int(now_ms) // size_ms + 1) * size_ms
    await asyncio.sleep((start - now_ms) / 1000 + into)
    return start


def _check_alive(worker: WorkerProcess, pid: int, what: str) -> None:
    if not worker.running() or worker.process is None or worker.process.pid != pid:
        raise AssertionError(
            f"the worker stopped while {what} (exit {worker.returncode()}):\n{worker.log[-6000:]}"
        )


async def test_forged_ticks_commands_and_configs_change_nothing(
    kafka_bootstrap: str, spawn_worker, topic_prefix: str
) -> None:
    worker = spawn_worker(
        window_seconds=str(WINDOW_S), grace_seconds=str(GRACE_S), partitions=str(PARTITIONS)
    )
    worker.wait_until_ready(timeout=120)
    pid = worker.process.pid
    rng = random.Random(1001)

    # A valid configuration (the defaults, with a version of its own) that nothing may displace.
    in_force = await publish_config(
        kafka_bootstrap,
        f"{topic_prefix}trust.config",
        ScoringConfig.validated(DEFAULT_WEIGHTS, 300, 500),
        requested_by="test",
    )
    version = in_force.version
    assert version >= 1
    wait_for_page(
        worker.base_url,
        "/metrics",
        lambda status, body: metric_sum(body, "trust_config_version") == version,
        30,
        f"configuration version {version} in force",
    )

    ticks_topic = f"{topic_prefix}trust.internal.ticks"
    forged_ticks_sent = 0
    forged_command_positions: set[tuple[str, int, int]] = set()
    stop = asyncio.Event()

    async def forge() -> None:
        nonlocal forged_ticks_sent
        while not stop.is_set():
            now_ms = int(time.time() * 1000)
            ticks = [
                # A tombstone needs a key; real ticks have none.
                (ticks_topic, p, None if value is not None else b"tick", value)
                for _, value in forged_tick_values(now_ms)
                for p in range(PARTITIONS)
            ]
            commands = forged_commands(topic_prefix, rng, PARTITIONS)
            placed = await produce_to(
                kafka_bootstrap, ticks + commands + forged_configs(topic_prefix)
            )
            forged_ticks_sent += len(ticks)
            forged_command_positions.update(placed[len(ticks) : len(ticks) + len(commands)])
            await asyncio.sleep(rng.uniform(0.3, 1.2))

    forging = asyncio.create_task(forge())
    script = FleetScript(Fleet(topic_prefix))
    agents = [agent_did("forged", i) for i in range(60)]
    unknown = "did:mesh:never-seen-forged"
    window_starts = []
    try:
        for w in range(WINDOWS):
            start = await sleep_until_next_window(WINDOW_S, into=SEND_AT_S - 0.4)
            _check_alive(worker, pid, "forged records arrived")
            # Right before the window's signals: ticks an hour and a day ahead on every partition.
            now_ms = int(time.time() * 1000)
            ahead = [
                (ticks_topic, p, None, future_tick(now_ms, ms))
                for p in range(PARTITIONS)
                for ms in (3_600_000, 86_400_000)
            ]
            lifts = [
                forgery
                for did, oracle in script.oracles.items()
                if oracle.revoked
                for forgery in reinstatement_forgeries(topic_prefix, did, PARTITIONS)
            ]
            unknown_command = unknown_agent_command(topic_prefix, unknown, PARTITIONS)
            placed = await produce_to(kafka_bootstrap, [*ahead, *lifts, unknown_command])
            forged_ticks_sent += len(ahead)
            forged_command_positions.update(placed[len(ahead) : len(ahead) + len(lifts)])
            await asyncio.sleep(max(0.0, start / 1000 + SEND_AT_S - time.time()))
            window_starts.append(start)
            per_agent = {
                did: window_signals(rng, behaviour_of(i), w, rng.choice((0, 1, 2, 3, 5)))
                for i, did in enumerate(agents)
            }
            await produce(kafka_bootstrap, script.send_window(start, per_agent))
            assert time.time() * 1000 < start + WINDOW_S * 1000, "sending took a whole window"
    finally:
        stop.set()
        await forging

    expected = script.expected

    def all_updates(records: list[Record]) -> bool:
        _check_alive(worker, pid, "waiting for the updates")
        bodies = [r.json() for r in records]
        for body in bodies:  # a moved clock shows at once: early closes, late signals
            early = iso_ms(body["computed_at"]) < iso_ms(body["window_end"]) + GRACE_S * 1000
            assert not early and body["late_signals"] == 0, f"a forged tick moved the clock: {body}"
        return {(b["agent_did"], iso_ms(b["window_start"])) for b in bodies} >= set(expected)

    records = await consume(
        kafka_bootstrap,
        [f"{topic_prefix}trust.scores"],
        until=all_updates,
        timeout=60,
        what=f"{len(expected)} score updates",
    )
    per_key = Counter((r.json()["agent_did"], r.json()["window_start"]) for r in records)
    assert max(per_key.values()) == 1, "an (agent, window) was published twice"
    slowest = 0
    for record in records:
        body = record.json()
        ScoreUpdate.model_validate(body)
        key = (body["agent_did"], iso_ms(body["window_start"]))
        assert key in expected, f"an update nobody expected: {body}"
        assert_update_matches(body, expected[key])
        assert body["weights_version"] == version, body
        end_ms = iso_ms(body["window_end"])
        computed_ms = iso_ms(body["computed_at"])
        closes_at = end_ms + GRACE_S * 1000
        assert closes_at <= computed_ms <= closes_at + CLOSE_WITHIN_MS, (
            f"window ending {body['window_end']} closed at {body['computed_at']}"
        )
        slowest = max(slowest, record.timestamp_ms - closes_at)
    assert slowest <= CLOSE_WITHIN_MS, f"an update was published {slowest} ms after its close"
    print(f"{len(records)} updates, published at most {slowest} ms after end + grace")

    # No revocation lifted: exactly one "revoked" per agent the oracle revokes, no reinstatement.
    revoked = {did for did, oracle in script.oracles.items() if oracle.revoked}
    assert revoked, "the fleet was meant to have revoked agents"
    events = [
        r.json() for r in await read_to_end(kafka_bootstrap, f"{topic_prefix}trust.revocations")
    ]
    assert [e for e in events if e["type"] != "revoked"] == []
    assert Counter(e["agent_did"] for e in events) == dict.fromkeys(revoked, 1)

    # Every malformed command was dead-lettered (bounded), and the unknown agent stays unknown.
    letters = await read_to_end(kafka_bootstrap, f"{topic_prefix}signals.deadletter")
    by_position = {letter_position(r.value): r for r in letters}
    assert set(by_position) >= forged_command_positions
    for position in forged_command_positions:
        record = by_position[position]
        assert record.json()["error_kind"] == "invalid_command", record.json()
        assert len(record.value or b"") + len(record.key or b"") <= MAX_DEAD_LETTER_BYTES
    status, _ = get(worker.base_url, f"/agents/{urllib.parse.quote(unknown, safe='')}/score")
    assert status == 404

    _, metrics = wait_for_page(
        worker.base_url, "/metrics", lambda status, _: status == 200, 30, "metrics"
    )
    assert metric_sum(metrics, "trust_config_version") == version
    rejected_ticks = metric_sum(metrics, "trust_internal_records_rejected", topic=ticks_topic)
    assert rejected_ticks == forged_ticks_sent, (rejected_ticks, forged_ticks_sent)
    print(f"forged ticks {forged_ticks_sent}, commands {len(forged_command_positions)}")

    _check_alive(worker, pid, "the test ended")
    assert "Traceback" not in worker.log
