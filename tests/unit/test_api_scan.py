"""Reading many stored agents for the API: key order across partitions, the states held in memory
before RocksDB has them, limits and budgets, slices that give the loop back, and the census."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.kafka.delivery import DeliveryHealth, Retrying
from streams.scoring.agent import AgentState
from streams.scoring.codec import StateFormatError, decode_state, encode_state
from streams.state.store import StateStore
from streams.web import scan as scan_module
from streams.web.scan import AgentScan, Census, Pacer, Stored, score_and_revoked
from tests.support.fake_kafka import FakeBatch, FakeProducer


class HeldProducer(FakeProducer):
    """Holds every changelog batch unconfirmed until released."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[tuple[asyncio.Future[Any], str, int, list[Any]]] = []

    async def send_batch(
        self, batch: FakeBatch, topic: str, *, partition: int
    ) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.held.append((future, topic, partition, batch.rows))
        return future


def _store(tmp_path: Path, producer: FakeProducer | None = None) -> StateStore:
    producer = producer or FakeProducer()
    return StateStore(
        state_dir=tmp_path,
        changelog_topic="changelog",
        producer=lambda: producer,
        delivery=Retrying(DeliveryHealth()),
    )


def _put(store: StateStore, partition: int, did: str, score: int, revoked: bool = False) -> None:
    store.db(partition).put(did.encode(), encode_state(AgentState(score=score, revoked=revoked)))


async def _scan_all(scan: AgentScan, **kwargs: Any) -> Any:
    return await scan.scan(lambda agent: agent.score_and_revoked()[0], **kwargs)


def test_score_and_revoked_reads_what_a_full_decode_reads() -> None:
    for state in (
        AgentState(),
        AgentState(score=120, revoked=True, history=[(1, 120)]),
        AgentState(score=999, recent=[[0.5] * 100 for _ in range(5)]),
    ):
        raw = encode_state(state)
        decoded = decode_state(raw)
        assert score_and_revoked(raw) == (decoded.score, decoded.revoked)


def test_score_and_revoked_raises_as_decoding_does_on_damage() -> None:
    for damaged in (b"", b"not json", b"[2, 1]", b'{"a": 1}', b"[99" + b", 0" * 18 + b"]"):
        with pytest.raises(StateFormatError):
            score_and_revoked(damaged)
    # A score out of range: decoded in full, and refused there.
    fields = orjson.loads(encode_state(AgentState()))
    fields[5] = 5000
    with pytest.raises(StateFormatError):
        score_and_revoked(orjson.dumps(fields))


async def test_agents_come_in_key_order_across_partitions(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _put(store, 0, "did:m:c", 300)
    _put(store, 1, "did:m:a", 100)
    _put(store, 1, "did:m:d", 400)
    _put(store, 0, "did:m:b", 200)
    scan = AgentScan(store, lambda: frozenset({0, 1}))
    result = await _scan_all(scan)
    assert result.found == [("did:m:a", 100), ("did:m:b", 200), ("did:m:c", 300), ("did:m:d", 400)]
    assert result.stopped_at is None and result.partitions == [0, 1]
    # Reserved keys (the partition clock, positions) are not agents.
    store.db(0).put(b"\x00partition-clock", b"123")
    assert len((await _scan_all(scan)).found) == 4


async def test_states_held_in_memory_are_read_before_rocksdb_has_them(tmp_path: Path) -> None:
    producer = HeldProducer()
    store = _store(tmp_path, producer)
    _put(store, 0, "did:m:a", 100)
    _put(store, 0, "did:m:b", 200)
    # Staged (not written at all), a newer state of a stored agent, and one sent to the
    # changelog and not yet confirmed; and a deletion not yet confirmed.
    store.stage(0, b"did:m:c", AgentState(score=300))
    store.stage(0, b"did:m:a", AgentState(score=111))
    await store.write(0, [(b"did:m:e", encode_state(AgentState(score=500)))])
    await store.delete_agents(0, [b"did:m:b"])
    scan = AgentScan(store, lambda: frozenset({0}))
    result = await _scan_all(scan)
    assert result.found == [("did:m:a", 111), ("did:m:c", 300), ("did:m:e", 500)]


async def test_a_page_stops_at_its_limit_or_budget_and_goes_on_after(tmp_path: Path) -> None:
    store = _store(tmp_path)
    for i in range(10):
        _put(store, i % 2, f"did:m:{i:02d}", 100 * (i % 3))
    scan = AgentScan(store, lambda: frozenset({0, 1}))

    def low(agent: Stored) -> int | None:
        score = agent.score_and_revoked()[0]
        return score if score < 100 else None

    first = await scan.scan(low, limit=2)
    assert [did for did, _ in first.found] == ["did:m:00", "did:m:03"]
    assert first.stopped_at == b"did:m:03"
    rest = await scan.scan(low, start=first.stopped_at + b"\x00", limit=2)
    assert [did for did, _ in rest.found] == ["did:m:06", "did:m:09"]
    # A budget bounds how many agents are read, matching or not.
    budgeted = await scan.scan(low, budget=4)
    assert budgeted.examined == 4 and budgeted.stopped_at == b"did:m:03"
    assert [did for did, _ in budgeted.found] == ["did:m:00", "did:m:03"]


async def test_a_long_scan_gives_the_loop_back_between_slices(tmp_path: Path) -> None:
    store = _store(tmp_path)
    for i in range(200):
        _put(store, 0, f"did:m:{i:04d}", 500)
    pauses: list[int] = []

    async def pause() -> None:
        pauses.append(1)
        await asyncio.sleep(0)

    scan = AgentScan(store, lambda: frozenset({0}), slice_seconds=0.0, pause=pause)
    result = await _scan_all(scan)
    assert len(result.found) == 200
    # A slice of no time still reads a clock check's worth of keys (16) before giving way.
    assert len(pauses) >= 200 // 16 - 1


async def test_slices_are_held_back_while_windows_close_but_never_starve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scan_module, "_PAUSE_PER_SLICE", 0.0)
    monkeypatch.setattr(scan_module, "BUSY_HOLD_SECONDS", 0.02)
    monkeypatch.setattr(scan_module, "BUSY_POLL_SECONDS", 0.001)
    store = _store(tmp_path)
    for i in range(80):
        _put(store, 0, f"did:m:{i:04d}", 500)
    looks: list[bool] = []
    busy = [False]

    def scoring_busy() -> bool:
        looks.append(busy[0])
        return busy[0]

    scan = AgentScan(store, lambda: frozenset({0}), slice_seconds=0.0, busy=scoring_busy)
    assert len((await _scan_all(scan)).found) == 80
    slices = len(looks) + 1  # one look after every slice but the last
    assert slices >= 80 // 8 and not any(looks)

    looks.clear()
    busy[0] = True
    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await _scan_all(scan)
    # Held the whole hold after each slice, looking again meanwhile, and still read everything.
    assert len(result.found) == 80
    assert loop.time() - started >= 0.02 * (slices - 1)
    assert len(looks) > 2 * (slices - 1)


async def test_a_partition_given_up_meanwhile_is_not_reported_as_read(tmp_path: Path) -> None:
    store = _store(tmp_path)
    for i in range(100):
        _put(store, i % 2, f"did:m:{i:04d}", 500)
    owned = {"now": frozenset({0, 1})}

    async def pause() -> None:
        owned["now"] = frozenset({0})

    scan = AgentScan(store, lambda: owned["now"], slice_seconds=0.0, pause=pause)
    result = await _scan_all(scan)
    assert result.partitions == [0]


async def test_damaged_records_are_skipped_by_readers(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _put(store, 0, "did:m:a", 100)
    store.db(0).put(b"did:m:b", b"garbage")
    _put(store, 0, "did:m:c", 300)
    result = await _scan_all(AgentScan(store, lambda: frozenset({0})))
    assert result.found == [("did:m:a", 100), ("did:m:c", 300)]


async def test_the_census_counts_and_is_served_from_memory_until_it_is_old(
    tmp_path: Path,
) -> None:
    store = _store(tmp_path)
    _put(store, 0, "did:m:a", 100)  # at risk
    _put(store, 1, "did:m:b", 100, revoked=True)  # revoked, so not at risk
    _put(store, 1, "did:m:c", 900)
    now = [1000.0]
    census = Census(
        AgentScan(store, lambda: frozenset({0, 1})), lambda: 500, max_age=60, clock=lambda: now[0]
    )
    counts = await census.counts(wait=5)
    assert counts is not None
    assert (counts.agents, counts.revoked, counts.at_risk, counts.at) == (3, 1, 1, 1000.0)
    _put(store, 0, "did:m:d", 100)
    now[0] += 30
    assert await census.counts(wait=5) == counts  # young enough
    now[0] += 31
    recounted = await census.counts(wait=5)
    assert recounted is not None and (recounted.agents, recounted.at_risk) == (4, 2)


async def test_a_census_not_done_in_time_answers_the_last_counts(tmp_path: Path) -> None:
    store = _store(tmp_path)
    for i in range(100):
        _put(store, 0, f"did:m:{i:04d}", 100)
    gate = asyncio.Event()

    async def pause() -> None:
        await gate.wait()

    scan = AgentScan(store, lambda: frozenset({0}), slice_seconds=0.0, pause=pause)
    census = Census(scan, lambda: 500)
    assert await census.counts(wait=0.01) is None  # never counted, and not done in time
    gate.set()
    for _ in range(100):
        counts = await census.counts(wait=1)
        if counts is not None:
            break
    assert counts is not None and counts.agents == 100


async def test_the_pacer_starts_at_most_so_many_pages_a_second(monkeypatch) -> None:
    now = [100.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(round(seconds, 6))
        now[0] += seconds

    monkeypatch.setattr("streams.web.scan.asyncio.sleep", sleep)
    pacer = Pacer(10, clock=lambda: now[0])
    for _ in range(4):
        await pacer.turn()
    assert slept == [0.1, 0.1, 0.1]  # the first at once, then one every tenth of a second
    now[0] += 5.0  # idle for a while: no burst owed, the next goes at once
    await pacer.turn()
    assert slept == [0.1, 0.1, 0.1]
