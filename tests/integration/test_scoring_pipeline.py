"""The score pipeline end to end: a real broker, a real worker process, the oracle as judge."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter

import orjson

from streams.messages import DeadLetter, RevocationEvent, ScoreUpdate
from tests.oracle import DEFAULT_WEIGHTS, DIMENSIONS, OracleAgent, total_score
from tests.support.fleet import (
    FleetScript,
    agent_did,
    assert_update_matches,
    behaviour_of,
    window_signals,
)
from tests.support.kafka_io import consume, produce
from tests.support.signals import (
    Fleet,
    dedupe_updates,
    iso_ms,
    latest_update_per_agent,
    lifetime_signals,
    signal_topic,
)

WINDOW_S = 5
GRACE_S = 1
#: A window's update is the agent's score recalculated when the window closes, over every signal
#: applied by then. The fleet sends each window's signals after the previous window has closed, so
#: that the oracle's window-by-window prediction is exactly what the service must publish.
SEND_AT_S = GRACE_S + 1.5


async def sleep_until_next_window(window_s: float, into: float = 0.15) -> int:
    """Align to the wall clock: return the start (ms) of the window we are now ``into`` s into."""
    size_ms = int(window_s * 1000)
    now_ms = time.time() * 1000
    start = (int(now_ms) // size_ms + 1) * size_ms
    await asyncio.sleep((start - now_ms) / 1000 + into)
    return start


async def test_fleet_of_1000_agents_over_3_windows_matches_the_oracle(
    kafka_bootstrap: str, spawn_worker, topic_prefix: str
) -> None:
    worker = spawn_worker(window_seconds=str(WINDOW_S), grace_seconds=str(GRACE_S))
    worker.wait_until_assigned(timeout=120)
    rng = random.Random(20261124)
    script = FleetScript(Fleet(topic_prefix))
    agents = [agent_did("fleet", i) for i in range(1000)]
    window_starts = []
    for w in range(3):
        start = await sleep_until_next_window(WINDOW_S, into=SEND_AT_S)
        window_starts.append(start)
        per_agent = {
            did: window_signals(rng, behaviour_of(i), w, rng.choice((0, 1, 2, 3, 4, 6)))
            for i, did in enumerate(agents)
        }
        await produce(kafka_bootstrap, script.send_window(start, per_agent))
        assert time.time() * 1000 < start + WINDOW_S * 1000, "producing took longer than a window"

    expected = script.expected
    updates = await consume(
        kafka_bootstrap,
        [f"{topic_prefix}trust.scores"],
        until=lambda r: (
            len(r) >= len(expected)
            and time.time() * 1000 > window_starts[-1] + (WINDOW_S + GRACE_S + 2) * 1000
        ),
        timeout=90,
        what=f"{len(expected)} score updates",
    )
    bodies = [u.json() for u in updates]
    per_key = Counter((b["agent_did"], b["window_start"]) for b in bodies)
    assert max(per_key.values()) == 1, "an (agent, window) was published twice"
    assert len(bodies) == len(expected)
    by_window = {}
    for body in bodies:
        start_ms = iso_ms(body["window_start"])
        by_window[(body["agent_did"], start_ms)] = body
        assert iso_ms(body["window_end"]) == start_ms + WINDOW_S * 1000
    assert set(by_window) == set(expected)
    for key, body in by_window.items():
        ScoreUpdate.model_validate(body)
        assert_update_matches(body, expected[key])

    revocations = await consume(
        kafka_bootstrap,
        [f"{topic_prefix}trust.revocations"],
        until=lambda r: len(r) >= sum(o.revoked for o in script.oracles.values()),
        timeout=30,
        what="revocations",
    )
    revoked = Counter(r.json()["agent_did"] for r in revocations)
    assert set(revoked) == {d for d, o in script.oracles.items() if o.revoked}
    assert max(revoked.values()) == 1
    for record in revocations:
        body = record.json()
        RevocationEvent.model_validate(body)
        assert record.key == body["agent_did"].encode()
        assert body["total_score"] < 300
        # The event explains itself: its dimension scores give its total.
        assert total_score(body["dimensions"], DEFAULT_WEIGHTS) == body["total_score"]
    assert "Traceback" not in worker.log


async def test_agent_below_threshold_is_revoked_once_before_its_window_closes(
    kafka_bootstrap: str, spawn_worker, topic_prefix: str
) -> None:
    window_s = 8
    worker = spawn_worker(window_seconds=str(window_s), grace_seconds="1")
    worker.wait_until_assigned(timeout=120)
    did = "did:mesh:rogue-agent"
    fleet = Fleet(topic_prefix)
    start = await sleep_until_next_window(window_s)
    first = [("security_posture", 0.0), ("policy_compliance", 0.0), ("output_quality", 0.1)]
    await produce(
        kafka_bootstrap,
        [fleet.record(did, d, v, signal_id=f"s{i}") for i, (d, v) in enumerate(first)],
    )

    revocations = await consume(
        kafka_bootstrap,
        [f"{topic_prefix}trust.revocations"],
        until=lambda r: len(r) >= 1,
        timeout=window_s,
        what="the revocation",
    )
    received_ms = time.time() * 1000
    assert received_ms < start + window_s * 1000, "revocation waited for the window to close"
    revocation = revocations[0].json()
    assert revocation["agent_did"] == did
    assert revocation["total_score"] < 300
    assert revocation["reason"] == f"Trust score {revocation['total_score']} below threshold"
    assert revocation["trigger"]["kind"] == "signal"
    assert revocation["trigger"]["signal_id"] in {"s0", "s1", "s2"}
    assert revocation["threshold"] == 300
    # More bad signals: applied, but the agent is not revoked a second time.
    await produce(kafka_bootstrap, [fleet.record(did, "collaboration_health", 0.0)] * 3)
    early_updates = await consume(
        kafka_bootstrap,
        [f"{topic_prefix}trust.scores"],
        until=lambda r: bool(r) or time.time() * 1000 > start + window_s * 1000,
        timeout=window_s * 2,
        what="the end of the window",
    )
    assert early_updates == [], "a score update was published before the window closed"

    updates = await consume(
        kafka_bootstrap,
        [f"{topic_prefix}trust.scores"],
        until=lambda r: len(r) >= 1,
        timeout=window_s * 3,
        what="the window's score update",
    )
    update = updates[0].json()
    expected_total = OracleAgent.replay(fleet.sent[did]).total_score
    assert update["revoked"] is True
    assert update["total_score"] == expected_total
    assert update["signals_in_window"] == 6
    assert update["dimensions"]["collaboration_health"]["signal_count"] == 3
    all_revocations = await consume(
        kafka_bootstrap,
        [f"{topic_prefix}trust.revocations"],
        until=lambda r: time.time() * 1000 > start + (window_s + 3) * 1000,
        timeout=window_s * 3,
        what="any further revocation",
    )
    assert len(all_revocations) == 1


def _malformed_records(prefix: str, i: int) -> list[tuple[str, str, bytes | None, bytes]]:
    """(expected error kind, topic, key, value) for one of each kind of bad input."""
    did = f"did:mesh:bad-{i}"
    topic = signal_topic(prefix, DIMENSIONS[i % 5])
    other = signal_topic(prefix, DIMENSIONS[(i + 1) % 5])
    key = did.encode()
    ok = {"agent_did": did, "value": 0.5, "source": "probe"}
    return [
        ("invalid_json", topic, key, b"{not json"),
        ("invalid_json", topic, key, b"\xff\xfe binary \x00"),
        ("not_an_object", topic, key, b"[1, 2, 3]"),
        ("not_an_object", topic, key, b'"a string"'),
        ("missing_field", topic, key, orjson.dumps({"agent_did": did, "source": "x"})),
        ("missing_field", topic, key, orjson.dumps({"value": 0.5, "source": "x"})),
        ("invalid_field", topic, key, orjson.dumps({**ok, "value": "0.5"})),
        ("invalid_field", topic, key, orjson.dumps({**ok, "value": True})),
        (
            "invalid_field",
            topic,
            key,
            b'{"agent_did": "%s", "value": NaN, "source": "x"}' % did.encode(),
        ),
        (
            "invalid_field",
            topic,
            key,
            b'{"agent_did": "%s", "value": Infinity, "source": "x"}' % did.encode(),
        ),
        ("invalid_field", topic, key, orjson.dumps({**ok, "value": 1.5})),
        ("invalid_field", topic, key, orjson.dumps({**ok, "value": -0.01})),
        ("invalid_field", topic, b"agent-7", orjson.dumps({**ok, "agent_did": "agent-7"})),
        ("invalid_field", topic, key, orjson.dumps({**ok, "timestamp": "2026-01-01T00:00:00"})),
        ("dimension_mismatch", other, key, orjson.dumps({**ok, "dimension": DIMENSIONS[i % 5]})),
        ("key_mismatch", topic, b"did:mesh:someone-else", orjson.dumps(ok)),
        ("missing_key", topic, None, orjson.dumps(ok)),
        ("too_large", topic, key, orjson.dumps({**ok, "details": "x" * 70_000})),
    ]


async def test_malformed_messages_go_to_the_dead_letter_topic_and_good_ones_are_applied(
    kafka_bootstrap: str, spawn_worker, topic_prefix: str
) -> None:
    worker = spawn_worker(window_seconds="3", grace_seconds="1")
    worker.wait_until_assigned(timeout=120)
    fleet = Fleet(topic_prefix)
    rng = random.Random(7)
    records: list[tuple[str, bytes | None, bytes]] = []
    expected_kinds: list[str | None] = []
    good_agents = [f"did:mesh:good-{i}" for i in range(100)]
    for i in range(60):
        for kind, topic, key, value in _malformed_records(topic_prefix, i):
            records.append((topic, key, value))
            expected_kinds.append(kind)
            for _ in range(2):
                did = rng.choice(good_agents)
                records.append(fleet.record(did, rng.choice(DIMENSIONS), rng.uniform(0.3, 1.0)))
                expected_kinds.append(None)
    bad_count = sum(k is not None for k in expected_kinds)
    assert bad_count >= 1000

    placed = await produce(kafka_bootstrap, records)
    expected_by_position = {
        pos: kind for pos, kind in zip(placed, expected_kinds, strict=True) if kind is not None
    }
    dead = await consume(
        kafka_bootstrap,
        [f"{topic_prefix}signals.deadletter"],
        until=lambda r: len(r) >= bad_count,
        timeout=60,
        what=f"{bad_count} dead letters",
    )
    letters = {}
    for record in dead:
        body = record.json()
        DeadLetter.model_validate(body)
        letters[(body["topic"], body["partition"], body["offset"])] = body
    assert set(letters) == set(expected_by_position)
    for position, kind in expected_by_position.items():
        letter = letters[position]
        assert letter["error_kind"] == kind, (letter, kind)
        assert letter["error"], letter
    # The original bytes are kept: binary as base64, text as text.
    binary = [b for b in letters.values() if b["value_encoding"] == "base64"]
    assert binary and all(b["error_kind"] == "invalid_json" for b in binary)

    def all_applied(records: list) -> bool:  # type: ignore[type-arg]
        latest = latest_update_per_agent([u.json() for u in records])
        return all(
            did in latest and lifetime_signals(latest[did]) == len(sent)
            for did, sent in fleet.sent.items()
        )

    updates = await consume(
        kafka_bootstrap,
        [f"{topic_prefix}trust.scores"],
        until=all_applied,
        timeout=60,
        what="updates covering every good signal",
    )
    latest = latest_update_per_agent(list(dedupe_updates([u.json() for u in updates]).values()))
    for did in fleet.sent:
        assert latest[did]["total_score"] == OracleAgent.replay(fleet.sent[did]).total_score
    assert worker.running(), "the worker stopped on bad input"
    assert "Traceback" not in worker.log
