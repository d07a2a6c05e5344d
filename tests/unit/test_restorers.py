"""Restore processes: how many a take-over uses, a database handed to one, and what their
failures and answers do."""

from __future__ import annotations

import asyncio
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
from rocksdict import Options, Rdict

from streams.kafka.clients import KafkaConnection
from streams.state.files import StateCounters
from streams.state.localdb import PartitionDatabases, PartitionHandedOver
from streams.state.restorers import (
    RestoreJob,
    RestoreProcessFailed,
    _all_or_none,
    _run_child,
    restore_processes,
)


def test_restore_processes_default_to_one_per_cpu_and_never_exceed_the_partitions() -> None:
    cpus = len(os.sched_getaffinity(0))
    assert restore_processes(0, 64) == min(cpus, 64)
    assert restore_processes(0, 1) == 1
    assert restore_processes(4, 6) == 4
    assert restore_processes(4, 3) == 3
    assert restore_processes(1, 6) == 1
    assert restore_processes(3, 0) == 1  # nothing to restore: no child is started for it


def test_a_handed_over_database_is_closed_refused_and_taken_back_intact(tmp_path: Path) -> None:
    databases = PartitionDatabases(tmp_path, 64 * 1024 * 1024, StateCounters())
    databases.get(2)[b"did:mesh:a"] = b"kept"
    databases.get(3)[b"did:mesh:b"] = b"untouched"
    databases.hand_over([2])
    with pytest.raises(PartitionHandedOver, match="partition 2's database is open in a restore"):
        databases.get(2)
    # Closed: it opens elsewhere (RocksDB refuses a database already open, even in one process).
    other = Rdict(str(tmp_path / "partition-2"), options=Options(raw_mode=True))
    other[b"did:mesh:c"] = b"restored elsewhere"
    other.close()
    assert databases.get(3)[b"did:mesh:b"] == b"untouched"  # the others stay open
    databases.take_back([2])
    reopened = databases.get(2)
    assert reopened[b"did:mesh:a"] == b"kept"
    assert reopened[b"did:mesh:c"] == b"restored elsewhere"
    databases.close()


async def test_the_first_failing_process_fails_the_restore_and_stops_the_others() -> None:
    stopped: list[str] = []

    async def failing() -> Any:
        await asyncio.sleep(0.01)
        raise RestoreProcessFailed("the process restoring partitions [1] exited with code 1")

    async def waiting() -> Any:
        try:
            await asyncio.sleep(3600)
        finally:
            stopped.append("waiting")  # where a child is killed

    with pytest.raises(RestoreProcessFailed, match=r"partitions \[1\]"):
        await asyncio.wait_for(_all_or_none([waiting(), failing(), waiting()]), 5)
    assert stopped == ["waiting", "waiting"]


class _AnsweringChild:
    """A restore process that exited 0 having written ``answer``."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.returncode: int | None = None

    async def communicate(self, job: bytes) -> tuple[bytes, None]:
        self.returncode = 0
        return self.answer, None


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (b"Hello from a library\n" + pickle.dumps("x"), "does not unpickle"),
        (pickle.dumps({"checks": {}})[:-3], "does not unpickle"),
        (pickle.dumps({"checks": {}}), "answered dict"),
        (b"", "exited with code 0"),
    ],
)
async def test_an_answer_that_is_no_outcome_fails_the_restore(answer: bytes, why: str) -> None:
    job = RestoreJob(Path("/nonexistent"), "t", None, KafkaConnection("k:9092"), (3,), 5, "INFO")
    with pytest.raises(RestoreProcessFailed, match=why):
        await _run_child(job, _AnsweringChild(answer))  # type: ignore[arg-type]
