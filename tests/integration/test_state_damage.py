"""Damaged local state heals itself: the worker deletes the partition's database and restores it
from the changelog instead of crash-looping, and scores continue exactly (judged by the oracle).
A record the changelog itself holds undecodable is dropped once, never looped on; one forged with
a matching CRC is dropped where it is first read."""

from __future__ import annotations

import os
import random
import shutil
import zlib
from collections import defaultdict
from pathlib import Path

import orjson
from rocksdict import Options, Rdict

from streams.scoring.agent import AgentState
from streams.scoring.codec import encode_state
from tests.oracle import DIMENSIONS, OracleAgent
from tests.support.kafka_io import consume, produce
from tests.support.signals import Fleet, dedupe_updates, latest_update_per_agent
from tests.support.worker import WorkerProcess

SETTINGS = {"window_seconds": "2", "grace_seconds": "1", "partitions": "3"}
CLOCK_KEY = b"\x00partition-clock"


def _signals(fleet: Fleet, rng: random.Random, agents: list[str], count: int) -> list:  # type: ignore[type-arg]
    """Mostly good behaviour; every seventh agent sends zeros (and is revoked)."""
    records = []
    for _ in range(count):
        i = rng.randrange(len(agents))
        if i % 7 == 0:
            dimension, value = "security_posture", 0.0
        else:
            dimension, value = rng.choice(DIMENSIONS), rng.choice((1.0, 0.9, rng.uniform(0.4, 1)))
        records.append(fleet.record(agents[i], dimension, value))
    return records


async def _scores_match_the_oracle(bootstrap: str, prefix: str, fleet: Fleet) -> None:
    """Every signal sent so far (to the agents in ``fleet``) is accounted for once in the updates,
    and each agent's latest update is what the oracle computes from everything it was sent."""
    expected = {did: fleet.signal_count(did) for did in fleet.sent}

    def accounted(records: list) -> bool:  # type: ignore[type-arg]
        counted: dict[str, int] = defaultdict(int)
        for update in dedupe_updates([r.json() for r in records]).values():
            counted[update["agent_did"]] += update["signals_in_window"] + update["late_signals"]
        return {did: counted.get(did, 0) for did in expected} == expected

    records = await consume(
        bootstrap,
        [f"{prefix}trust.scores"],
        until=accounted,
        timeout=120,
        what="updates accounting for every signal exactly once",
    )
    latest = latest_update_per_agent(list(dedupe_updates([r.json() for r in records]).values()))
    for did, sent in fleet.sent.items():
        oracle = OracleAgent.replay(sent)
        final = latest[did]
        assert final["total_score"] == oracle.total_score, did
        assert final["revoked"] is oracle.revoked, did
        for d in DIMENSIONS:
            assert final["dimensions"][d]["signal_count"] == oracle.lifetime_counts[d], (did, d)
            assert final["dimensions"][d]["score"] == oracle.dimension_scores()[d], (did, d)


def _partition_with_agents(state_dir: Path, skip: Path | None = None) -> tuple[Path, bytes]:
    """A partition directory holding agents, and one of its agent keys (opened as the store
    opens it: raw mode)."""
    for directory in sorted((state_dir / "agent-state").glob("partition-*")):
        if directory == skip:
            continue
        db = Rdict(str(directory), options=Options(raw_mode=True))
        try:
            # keys(): iterating a raw-mode Rdict itself fails
            agents = [key for key in db.keys() if not key.startswith(b"\x00")]  # noqa: SIM118
        finally:
            db.close()
        if agents:
            return directory, agents[0]
    raise AssertionError("no partition database holds an agent")


async def test_corrupt_entries_and_a_garbage_database_are_restored_from_the_changelog(
    kafka_bootstrap: str, spawn_worker, topic_prefix: str, tmp_path: Path
) -> None:
    rng = random.Random(2024)
    worker, fleet, agents = await _scored_then_stopped(
        kafka_bootstrap, spawn_worker, topic_prefix, rng, "damaged", agents=90
    )
    state_dir = tmp_path / "state-w1"

    # (a) An agent's state and the partition clock no longer decode.
    damaged, agent = _partition_with_agents(state_dir)
    db = Rdict(str(damaged), options=Options(raw_mode=True))
    db[agent] = b"\x00\xffnot a state"
    db[CLOCK_KEY] = b"{garbage"
    db.close()
    worker.start()
    worker.wait_until_ready(timeout=120)
    worker.wait_for_log(f"Partition {damaged.name.split('-')[1]}: local state is damaged")
    await produce(kafka_bootstrap, _signals(fleet, rng, agents, 900))
    await _scores_match_the_oracle(kafka_bootstrap, topic_prefix, fleet)
    assert worker.terminate() == 0

    # (b) A partition's directory replaced by garbage files.
    replaced, _ = _partition_with_agents(state_dir, skip=damaged)
    shutil.rmtree(replaced)
    replaced.mkdir()
    for name in ("CURRENT", "MANIFEST-000004", "000009.sst", "OPTIONS-000007", "LOCK"):
        (replaced / name).write_bytes(os.urandom(8192))
    worker.start()
    worker.wait_until_ready(timeout=120)
    worker.wait_for_log(f"Local state in {replaced} cannot be opened")
    await produce(kafka_bootstrap, _signals(fleet, rng, agents, 900))
    await _scores_match_the_oracle(kafka_bootstrap, topic_prefix, fleet)

    assert worker.running()
    assert "Traceback" not in worker.log


async def _scored_then_stopped(
    bootstrap: str,
    spawn_worker,
    prefix: str,
    rng: random.Random,
    name: str,
    agents: int = 30,
) -> tuple[WorkerProcess, Fleet, list[str]]:
    """A worker that scored ten signals per agent exactly, then stopped cleanly."""
    worker: WorkerProcess = spawn_worker(**SETTINGS)
    worker.wait_until_ready(timeout=120)
    fleet = Fleet(prefix)
    dids = [f"did:mesh:{name}-{i:03d}" for i in range(agents)]
    await produce(bootstrap, _signals(fleet, rng, dids, 10 * agents))
    await _scores_match_the_oracle(bootstrap, prefix, fleet)
    assert worker.terminate() == 0
    return worker, fleet, dids


async def test_an_undecodable_changelog_record_is_dropped_once_and_never_looped_on(
    kafka_bootstrap: str, spawn_worker, topic_prefix: str
) -> None:
    rng = random.Random(77)
    worker, fleet, agents = await _scored_then_stopped(
        kafka_bootstrap, spawn_worker, topic_prefix, rng, "forged"
    )

    # A record nobody could decode, forged onto the changelog under a known agent's key.
    victim = agents[1]
    placed = await produce(
        kafka_bootstrap, [(f"{topic_prefix}trust.internal.agent-state", victim.encode(), b"{")]
    )
    worker.start()
    worker.wait_until_ready(timeout=120)
    worker.wait_for_log(f"Partition {placed[0][1]}: the changelog holds an undecodable entry")
    # The forged record wiped the agent's state: it starts afresh, and the others go on exactly.
    fleet.sent.pop(victim)
    await produce(kafka_bootstrap, _signals(fleet, rng, [a for a in agents if a != victim], 300))
    await _scores_match_the_oracle(kafka_bootstrap, topic_prefix, fleet)

    # Restarted with the same local state: the record is behind the persisted offset now.
    assert worker.terminate() == 0
    worker.start()
    worker.wait_until_ready(timeout=120)
    assert "the changelog holds an undecodable entry" not in worker.log_since_start()
    assert "local state is damaged" not in worker.log_since_start()
    assert worker.running()
    assert "Traceback" not in worker.log


async def test_a_state_forged_with_a_matching_crc_is_dropped_where_it_is_met(
    kafka_bootstrap: str, spawn_worker, topic_prefix: str
) -> None:
    rng = random.Random(31)
    worker, fleet, agents = await _scored_then_stopped(
        kafka_bootstrap, spawn_worker, topic_prefix, rng, "sealed"
    )

    # A record that passes the takeover's CRC check and is still no state: whoever wrote it
    # could compute the CRC. Three dimensions' counts where there are five.
    fields = orjson.loads(encode_state(AgentState()))[:-1]
    fields[2] = [1, 2, 3]
    unsealed = orjson.dumps(fields)[:-1]
    forged = b"%b,%d]" % (unsealed, zlib.crc32(unsealed))
    victim = agents[2]
    await produce(
        kafka_bootstrap, [(f"{topic_prefix}trust.internal.agent-state", victim.encode(), forged)]
    )
    worker.start()
    worker.wait_until_ready(timeout=120)
    assert "local state is damaged" not in worker.log_since_start()  # the CRC matches
    # Met at the victim's next signal: dropped there, and that agent starts afresh.
    fleet.sent.pop(victim)
    afresh = Fleet(topic_prefix)
    others = [a for a in agents if a != victim]
    await produce(
        kafka_bootstrap,
        _signals(fleet, rng, others, 300) + _signals(afresh, rng, [victim], 20),
    )
    worker.wait_for_log(f"stored state of {victim.encode()!r} does not decode")
    await _scores_match_the_oracle(kafka_bootstrap, topic_prefix, fleet)
    # The victim's latest update is the oracle's over what it was sent since, and nothing else.
    oracle = OracleAgent.replay(afresh.sent[victim])

    def caught_up(records: list) -> bool:  # type: ignore[type-arg]
        updates = dedupe_updates([r.json() for r in records]).values()
        update = latest_update_per_agent(list(updates)).get(victim)
        counts = {d: update["dimensions"][d]["signal_count"] for d in DIMENSIONS} if update else {}
        return counts == oracle.lifetime_counts

    records = await consume(
        kafka_bootstrap,
        [f"{topic_prefix}trust.scores"],
        until=caught_up,
        timeout=120,
        what=f"an update of {victim} counting only the signals sent after the drop",
    )
    latest = latest_update_per_agent(list(dedupe_updates([r.json() for r in records]).values()))
    assert latest[victim]["total_score"] == oracle.total_score
    assert worker.running()
    assert "Traceback" not in worker.log
