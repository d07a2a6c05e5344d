"""Restoring partitions side by side in child processes, against the local broker: the same
databases and schedules as a restore in the worker's own process, damage handled the same way,
and no child outliving a cancelled take-over or a killed worker (it would hold the databases'
locks)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from streams.kafka.clients import KafkaConnection
from streams.scoring.agent import AgentState, WindowTally
from streams.scoring.codec import encode_state
from streams.state.changelog import PERSISTED_OFFSET_KEY
from streams.state.check import PartitionCheck
from streams.state.files import raw_items
from streams.state.restore import restore_verified
from streams.state.restorers import RestoreProcesses, RestoreProcessFailed
from streams.state.store import StateStore
from tests.support.kafka_io import create_topics

PARTITIONS = 4
AGENTS = 4_000
SIGNAL_TOPICS = 5


@pytest.fixture
def silent_broker() -> Iterator[str]:
    """An address that accepts connections and never answers: a restore against it waits."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield f"127.0.0.1:{server.getsockname()[1]}"


def _state(i: int) -> bytes:
    state = AgentState(last_close_tick=i % 7 if i % 3 else -1)
    if i % 2:
        state.open_windows[1_700_000_000_000 + (i % 5) * 30_000] = WindowTally()
    return encode_state(state)


async def _changelog(bootstrap: str, topic: str, extra: list[tuple[int, bytes, bytes]]) -> None:
    """Two versions of AGENTS agent states over PARTITIONS partitions, every 40th deleted in the
    second, then ``extra`` (partition, key, value) records."""
    await create_topics(bootstrap, [topic], PARTITIONS)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, compression_type="zstd", acks="all")
    await producer.start()
    try:
        sends = []
        for version in range(2):
            for i in range(AGENTS):
                value = None if version and i % 40 == 0 else _state(i + version)
                key = f"did:mesh:side-{i:05d}".encode()
                sends.append(await producer.send(topic, value, key=key, partition=i % PARTITIONS))
        for partition, key, value in extra:
            sends.append(await producer.send(topic, value, key=key, partition=partition))
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


def _store(root: Path, topic: str) -> StateStore:
    return StateStore(state_dir=root, changelog_topic=topic, producer=lambda: None)


async def restore_side_by_side(
    store: StateStore, kafka: KafkaConnection, partitions: range
) -> dict[int, PartitionCheck]:
    """A restore in two processes started for it."""
    return await RestoreProcesses(2, "INFO").restore(store, kafka, partitions, SIGNAL_TOPICS)


def _contents(store: StateStore) -> dict[int, dict[bytes, bytes]]:
    return {p: dict(raw_items(store.db(p))) for p in range(PARTITIONS)}


def _children(pid: int) -> list[int]:
    """``pid``'s restore processes (the test process may have other children: a broker)."""
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(child) for child in found.split() if _is_restorer(int(child))]


def _is_restorer(pid: int) -> bool:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    return b"streams.state.restorers" in command


async def test_side_by_side_restores_what_one_process_restores(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = f"side-by-side-{uuid.uuid4().hex[:8]}.agent-state"
    forged = b"did:mesh:forged"
    await _changelog(kafka_bootstrap, topic, [(1, forged, b"[4,not a state")])
    kafka = KafkaConnection(kafka_bootstrap)

    alone = _store(tmp_path / "alone", topic)
    expected = await restore_verified(alone, kafka, range(PARTITIONS), SIGNAL_TOPICS)
    side = _store(tmp_path / "side", topic)
    checks = await restore_side_by_side(side, kafka, range(PARTITIONS))

    assert sorted(checks) == list(range(PARTITIONS))
    for partition, check in checks.items():
        assert check.agents == expected[partition].agents > 0
        assert check.schedule.open_windows == expected[partition].schedule.open_windows
        assert check.schedule.closed_by_tick == expected[partition].schedule.closed_by_tick
        assert side.counters.agents[partition] == check.agents
    # The forged entry was dropped in a child, and counted in the worker.
    assert side.counters.state_entries_dropped == alone.counters.state_entries_dropped == 1
    contents = _contents(side)
    assert contents == _contents(alone)
    assert forged not in contents[1]
    assert all(int(contents[p][PERSISTED_OFFSET_KEY]) > 0 for p in range(PARTITIONS))


async def test_a_restore_uses_the_processes_warmed_up_for_it(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = f"side-warm-{uuid.uuid4().hex[:8]}.agent-state"
    await _changelog(kafka_bootstrap, topic, [])
    processes = RestoreProcesses(2, "INFO")
    await processes.warm_up(PARTITIONS)
    await processes.warm_up(PARTITIONS)  # a second rebalance before the take-over: no more
    warm = _children(os.getpid())
    assert len(warm) == 2
    checks = await processes.restore(
        _store(tmp_path, topic), KafkaConnection(kafka_bootstrap), range(PARTITIONS), SIGNAL_TOPICS
    )
    assert sum(check.agents for check in checks.values()) == AGENTS - AGENTS // 40
    # The warm processes did the work and exited; none was started beside them.
    assert not [pid for pid in warm if _alive(pid)]
    assert _children(os.getpid()) == []
    # Warmed up and not needed (the worker stops): released, they exit.
    await processes.warm_up(PARTITIONS)
    assert len(_children(os.getpid())) == 2
    await processes.release()
    assert _children(os.getpid()) == []
    # Warmed up for a take-over that needs one partition (restored in this process): released.
    await processes.warm_up(PARTITIONS)
    await processes.restore(
        _store(tmp_path, topic), KafkaConnection(kafka_bootstrap), [2], SIGNAL_TOPICS
    )
    assert _children(os.getpid()) == []


async def test_a_cancelled_side_by_side_restore_leaves_no_child_and_opens_again(
    kafka_bootstrap: str, silent_broker: str, tmp_path: Path
) -> None:
    topic = f"side-cancelled-{uuid.uuid4().hex[:8]}.agent-state"
    await _changelog(kafka_bootstrap, topic, [])
    store = _store(tmp_path, topic)
    waiting = asyncio.ensure_future(
        restore_side_by_side(
            store,
            KafkaConnection(silent_broker),
            range(PARTITIONS),
        )
    )
    deadline = time.monotonic() + 20
    while len(_children(os.getpid())) < 2:
        assert time.monotonic() < deadline, "the restore processes did not start"
        await asyncio.sleep(0.05)
    children = _children(os.getpid())
    with pytest.raises(RuntimeError, match="in a restore process"):
        store.db(0)  # handed over: never opened beside the child that has it
    await asyncio.sleep(1.0)
    assert not waiting.done()  # no answer: the children wait for one
    cancelled_at = time.monotonic()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    # Killed, not left to wait out the silent broker (its requests time out after 40 s).
    assert time.monotonic() - cancelled_at < 10
    assert not [pid for pid in children if _alive(pid)]
    # The databases are free again: a restore from the real broker completes.
    checks = await restore_side_by_side(
        store,
        KafkaConnection(kafka_bootstrap),
        range(PARTITIONS),
    )
    assert sum(check.agents for check in checks.values()) == AGENTS - AGENTS // 40


async def test_a_failing_restore_process_fails_the_restore(tmp_path: Path) -> None:
    blocked = tmp_path / "a file, not a directory"
    blocked.write_text("")
    store = _store(blocked, "side-failing.agent-state")
    with pytest.raises(RestoreProcessFailed, match=r"restoring partitions \[(0, 2|1, 3)\] exited"):
        await restore_side_by_side(
            store,
            KafkaConnection("127.0.0.1:1"),  # never reached: the children fail first
            range(PARTITIONS),
        )
    assert _children(os.getpid()) == []


_WORKER = """
import asyncio, sys
from pathlib import Path
from streams.kafka.clients import KafkaConnection
from streams.state.restorers import RestoreProcesses
from streams.state.store import StateStore

store = StateStore(state_dir=Path(sys.argv[1]), changelog_topic="t", producer=lambda: None)
asyncio.run(RestoreProcesses(2, "INFO").restore(store, KafkaConnection(sys.argv[2]), range(4), 5))
"""


def test_restore_processes_die_with_a_killed_worker(silent_broker: str, tmp_path: Path) -> None:
    worker = subprocess.Popen(
        [sys.executable, "-c", _WORKER, str(tmp_path), silent_broker], stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 20
        while len(children := _children(worker.pid)) < 2:
            assert time.monotonic() < deadline, "the restore processes did not start"
            time.sleep(0.05)
        time.sleep(1.0)  # each has read its job and set itself to die with the worker
        assert all(Path(f"/proc/{pid}").exists() for pid in children)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        deadline = time.monotonic() + 5
        while alive := [pid for pid in children if _alive(pid)]:
            assert time.monotonic() < deadline, f"restore processes {alive} outlived the worker"
            time.sleep(0.05)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for a parent to reap it."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return status.rsplit(")", 1)[1].split()[0] != "Z"
