"""Restoring a take-over's partitions side by side, in processes of their own.

A restore is two Python loops, one per changelog record and one per stored agent
(:mod:`streams.state.restore`), and one process runs them on one core. Each partition has a
database of its own, so partitions can be restored side by side: the worker hands their
databases over (RocksDB lets one process at a time open a database), child processes restore and
check a share each with :func:`~streams.state.restore.restore_verified`, exactly as the worker
would, and send back each partition's check (its agent count and window schedule). The worker
then opens the databases again.

A child is a plain ``python -m streams.state.restorers``: its job is written to its stdin and its
checks come back on its stdout, pickled (both ends are this module, one started by the other);
its log lines go to the worker's stderr. Children are started when a rebalance begins, so that
their start-up overlaps the group's (:class:`RestoreProcesses`).

A child that fails or dies fails the take-over, as a failed restore in the worker's own process
does. A take-over cancelled by a rebalance kills its children: a database written without the
write-ahead log then holds a prefix of the changelog and says so, and the next restore goes on
from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import pickle
import resource
import signal
import sys
import time
from asyncio.subprocess import Process
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streams.errors import TrustServiceError
from streams.kafka.clients import KafkaConnection
from streams.logs import WORKER_LOG_FORMAT, configure_logging
from streams.state.check import PartitionCheck
from streams.state.restore import restore_verified
from streams.state.store import StateStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RestoreJob:
    """What one child restores and checks, and everything it needs to do it alone."""

    state_dir: Path
    changelog_topic: str
    rocksdb_memory_bytes: int | None
    kafka: KafkaConnection
    partitions: tuple[int, ...]
    signal_topics: int
    log_level: str


@dataclass(frozen=True, slots=True)
class RestoreOutcome:
    """What a child sends back: each partition's check and what its store counted."""

    checks: dict[int, PartitionCheck]
    local_store_resets: int
    state_entries_dropped: int
    peak_rss_mib: float


class RestoreProcessFailed(TrustServiceError, RuntimeError):
    """A restore process failed or died; its own log lines (above this one) say why."""


def restore_processes(configured: int, partitions: int) -> int:
    """How many processes restore ``partitions`` partitions: as configured, or (0) one per CPU
    this process may run on; never more than one per partition."""
    wanted = configured or len(os.sched_getaffinity(0))
    return max(1, min(wanted, partitions))


class RestoreProcesses:
    """The child processes a worker's take-overs restore in, started ahead when they can be.

    A child takes about 0.3 s to start (Python and its imports): :meth:`warm_up`, called when a
    rebalance begins, starts them while the group is joined, and a take-over hands its jobs to
    them. A warm child waits for its job on stdin and is told to stop by an empty one.
    """

    def __init__(self, configured: int, log_level: str) -> None:
        self.configured = configured
        self.log_level = log_level
        self._warm: list[Process] = []

    async def warm_up(self, partitions: int) -> None:
        """Have as many children waiting as a take-over of ``partitions`` partitions uses."""
        wanted = restore_processes(self.configured, partitions)
        if wanted < 2:
            return  # restored in the worker's own process
        self._warm = [child for child in self._warm if child.returncode is None]
        while len(self._warm) < wanted:
            self._warm.append(await _start_child())

    async def release(self) -> None:
        """Stop the children waiting: the worker is stopping, or a take-over did not need them."""
        warm, self._warm = self._warm, []
        for child in warm:
            with contextlib.suppress(ConnectionError):  # gone already
                await child.communicate(b"")

    async def restore(
        self,
        store: StateStore,
        kafka: KafkaConnection,
        partitions: Iterable[int],
        signal_topics: int,
    ) -> dict[int, PartitionCheck]:
        """Restore and check ``partitions`` as :func:`restore_verified` does, side by side in
        child processes (in this one when one process is configured, or one partition given)."""
        wanted = sorted(set(partitions))
        count = restore_processes(self.configured, len(wanted))
        try:
            if count == 1:
                return await restore_verified(store, kafka, wanted, signal_topics)
            return await self._restore_side_by_side(store, kafka, wanted, signal_topics, count)
        finally:
            await self.release()  # those this take-over did not need wait for no other

    async def _restore_side_by_side(
        self,
        store: StateStore,
        kafka: KafkaConnection,
        wanted: list[int],
        signal_topics: int,
        count: int,
    ) -> dict[int, PartitionCheck]:
        shares = [tuple(wanted[i::count]) for i in range(count)]
        started = time.perf_counter()
        log.info("Restoring partitions %s in %d processes: %s", wanted, count, shares)
        jobs = [self._job(store, kafka, share, signal_topics, count) for share in shares]
        store.databases.hand_over(wanted)
        try:
            outcomes = await _all_or_none([self._run(job) for job in jobs])
        finally:
            store.databases.take_back(wanted)
        checks: dict[int, PartitionCheck] = {}
        for outcome in outcomes:
            checks.update(outcome.checks)
            store.counters.local_store_resets += outcome.local_store_resets
            store.counters.state_entries_dropped += outcome.state_entries_dropped
        for partition, check in checks.items():
            store.counters.agents[partition] = check.agents
        log.info(
            "Restored and checked partitions %s in %d processes: %d agents in %.2f s "
            "(peak RSS of a process %.0f MiB)",
            wanted,
            count,
            sum(check.agents for check in checks.values()),
            time.perf_counter() - started,
            max(outcome.peak_rss_mib for outcome in outcomes),
        )
        return checks

    def _job(
        self,
        store: StateStore,
        kafka: KafkaConnection,
        share: tuple[int, ...],
        signal_topics: int,
        count: int,
    ) -> RestoreJob:
        budget = store.rocksdb_memory_bytes
        return RestoreJob(
            state_dir=store.state_dir,
            changelog_topic=store.changelog_topic,
            # The children's databases share the worker's budget while they run.
            rocksdb_memory_bytes=None if budget is None else budget // count,
            kafka=kafka,
            partitions=share,
            signal_topics=signal_topics,
            log_level=self.log_level,
        )

    async def _run(self, job: RestoreJob) -> RestoreOutcome:
        child = None
        while self._warm and child is None:
            taken = self._warm.pop()
            child = taken if taken.returncode is None else None
        return await _run_child(job, child if child is not None else await _start_child())


async def _all_or_none(runs: list[Coroutine[Any, Any, RestoreOutcome]]) -> list[RestoreOutcome]:
    """Every run's outcome; at the first failure the other runs are cancelled (their children
    killed) before it is raised: no child goes on restoring for a take-over that failed."""
    tasks = [asyncio.ensure_future(run) for run in runs]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)  # each kills its child and waits for it to exit
    for task in tasks:  # the failure, not the cancellations it caused
        error = None if task.cancelled() else task.exception()
        if error is not None:
            raise error
    return [task.result() for task in tasks]


async def _start_child() -> Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        __name__,
        str(os.getpid()),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )


async def _run_child(job: RestoreJob, child: Process) -> RestoreOutcome:
    try:
        answer, _ = await child.communicate(pickle.dumps(job))
    except BaseException:  # cancelled (a rebalance) or failing: the child must not go on
        with contextlib.suppress(ProcessLookupError):
            child.kill()
        await child.wait()
        raise
    if child.returncode != 0 or not answer:
        raise RestoreProcessFailed(f"{_named(job)} exited with code {child.returncode}")
    try:
        outcome = pickle.loads(answer)
    except Exception as exc:  # cut short, or not ours
        raise RestoreProcessFailed(
            f"{_named(job)} answered what does not unpickle: {exc!r}"
        ) from exc
    if not isinstance(outcome, RestoreOutcome):
        raise RestoreProcessFailed(f"{_named(job)} answered {type(outcome).__name__}")
    return outcome


def _named(job: RestoreJob) -> str:
    return f"the process restoring partitions {list(job.partitions)}"


def _no_producer() -> None:
    raise RuntimeError("a restore process writes nothing to Kafka")


def _restore(job: RestoreJob) -> RestoreOutcome:
    store = StateStore(
        state_dir=job.state_dir,
        changelog_topic=job.changelog_topic,
        producer=_no_producer,
        rocksdb_memory_bytes=job.rocksdb_memory_bytes,
    )
    try:
        checks = asyncio.run(restore_verified(store, job.kafka, job.partitions, job.signal_topics))
    finally:
        store.databases.close()  # flushed by the restore; closed before the worker opens them again
    return RestoreOutcome(
        checks,
        store.counters.local_store_resets,
        store.counters.state_entries_dropped,
        # ru_maxrss is in KiB on Linux.
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )


def _die_with_worker(worker_pid: int) -> None:
    """Be killed when the worker dies (SIGKILL included): a child left running would hold its
    databases' locks, and a worker started again on the same directory could not open them."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the job's end stops it
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != worker_pid:  # gone already, before the line above took effect
        os._exit(1)


_PR_SET_PDEATHSIG = 1


def main() -> int:
    _die_with_worker(int(sys.argv[1]))  # first: a warm child may wait long for its job
    # stdout carries the answer alone: whatever else would write there (a library's print, at
    # the C level too) goes to stderr with the log.
    answer = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    given = sys.stdin.buffer.read()
    if not given:
        return 0  # released unused
    job = pickle.loads(given)
    configure_logging(job.log_level, WORKER_LOG_FORMAT)
    try:
        outcome = _restore(job)
    except Exception:
        log.exception("Restoring partitions %s failed", list(job.partitions))
        return 1
    pickler = pickle.Pickler(answer, protocol=pickle.HIGHEST_PROTOCOL)
    # Without the memo, which remembers each of a million keys to share repeats (twice as fast;
    # the checks hold no cycles, which is what the memo is otherwise for).
    with contextlib.suppress(AttributeError):  # documented as deprecated: mere speed if gone
        pickler.fast = True
    pickler.dump(outcome)
    answer.flush()
    logging.shutdown()
    # The worker waits for this process to end, and nothing here needs an orderly exit (the
    # databases are closed): skipping it saved about 0.1 s of a million agents' restore
    # (measured, three restores each way: 3.62 s on average, against 3.73 s).
    os._exit(0)


if __name__ == "__main__":
    # Run as this module's importable self, so that what it pickles names the module, not
    # ``__main__`` (which the worker could not unpickle).
    from streams.state import restorers

    sys.exit(restorers.main())
