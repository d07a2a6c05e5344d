"""One input log, four ways through the worker, the same outputs: event time at work.

A log of 200,000 signals for 5,000 agents over nine 2-second windows (one agent in ten low enough
to be revoked) is processed (a) live, produced at real-time pace into a running worker; (b) as a
backlog by a fresh worker; (c) as a backlog with three SIGKILLs and restarts (one of them on an
emptied state directory, so that worker restores from the changelog); (d) by two workers, one
killed midway. Every way must publish the same (agent, window) updates, byte for byte, and the
same revocations; repeats of an output must be byte-identical; and every update must equal the
independent oracle of tests/support/eventtime.py, which applies the signals in time order and
takes each window's score at its end.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.kafka.topics import TopicNames
from tests.oracle import DIMENSIONS
from tests.support.broker import REPO_ROOT
from tests.support.eventtime import Expected, LoggedSignal, expected, make_log
from tests.support.kafka_io import produce, producer, unique_name
from tests.support.web import get, metric_sum
from tests.support.worker import WorkerProcess, worker_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

WINDOW_MS, GRACE_MS, WINDOWS = 2_000, 1_000, 9
AGENTS, SIGNALS, PARTITIONS = 5_000, 200_000, 4
SETTINGS = {
    "window_seconds": str(WINDOW_MS / 1000),
    "grace_seconds": str(GRACE_MS / 1000),
    # Live, the test's own producer may lag behind the records' times on a busy machine.
    "signal_merge_wait_seconds": "1",
}


class Outputs:
    """Everything a prefix's worker(s) published: each update and revocation once, every
    repeat checked byte for byte against the first."""

    def __init__(self, bootstrap: str, prefix: str) -> None:
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.updates: dict[tuple[str, int], bytes] = {}
        self.revocations: dict[str, bytes] = {}
        self.repeats = 0
        self._consumer: AIOKafkaConsumer | None = None

    async def __aenter__(self) -> Outputs:
        self._consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None)
        await self._consumer.start()
        names = TopicNames(self.prefix)
        tps = [
            TopicPartition(topic, p)
            for topic in (names.scores, names.revocations)
            for p in range(PARTITIONS)
        ]
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._consumer is not None
        await self._consumer.stop()

    async def poll(self) -> None:
        assert self._consumer is not None
        batches = await self._consumer.getmany(timeout_ms=500, max_records=50_000)
        for tp, records in batches.items():
            for record in records:
                body = orjson.loads(record.value)
                if tp.topic.endswith(".scores"):
                    start = int(_epoch_ms(body["window_start"]))
                    self._keep(self.updates, (body["agent_did"], start), record.value)
                elif body.get("type") == "revoked":
                    self._keep(self.revocations, body["revocation_id"], record.value)

    def _keep(self, seen: dict, key: object, value: bytes) -> None:  # type: ignore[type-arg]
        first = seen.setdefault(key, value)
        if first is not value:
            self.repeats += 1
            assert first == value, f"a repeat of {key} differs:\n{first!r}\n{value!r}"

    async def wait_for(self, count: int, timeout: float, while_waiting: Callable[[], None]) -> None:
        deadline = time.monotonic() + timeout
        while len(self.updates) < count:
            assert time.monotonic() < deadline, (
                f"{len(self.updates)} of {count} updates after {timeout:.0f} s"
            )
            while_waiting()
            await self.poll()
        await asyncio.sleep(2 * GRACE_MS / 1000)  # anything still on its way: a repeat
        await self.poll()

    def revocations_as_of(self, prefix: str) -> list[bytes]:
        """The revocations, as they would read had they been published under ``prefix``."""
        own, other = self.prefix.encode(), prefix.encode()
        return sorted(value.replace(own, other) for value in self.revocations.values())

    def totals(self) -> dict[tuple[str, int], int]:
        return {key: orjson.loads(value)["total_score"] for key, value in self.updates.items()}

    def revoked(self) -> dict[tuple[str, tuple[object, ...]], int]:
        found: dict[tuple[str, tuple[object, ...]], int] = {}
        for value in self.revocations.values():
            body = orjson.loads(value)
            trigger = body["trigger"]
            if trigger["kind"] == "signal":
                dimension = DIMENSIONS.index(trigger["topic"].rsplit(".", 1)[-1])
                cause: tuple[object, ...] = ("signal", dimension, trigger["offset"])
            else:
                cause = ("window", int(_epoch_ms(trigger["window_start"])))
            found[body["agent_did"], cause] = body["total_score"]
        return found


def _epoch_ms(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000


class Way:
    """One way through: its own topics, state directories and workers."""

    def __init__(self, bootstrap: str, base: Path, name: str) -> None:
        self.bootstrap = bootstrap
        self.prefix = unique_name(f"et-{name}") + "."
        self.base = base / name
        self.base.mkdir(parents=True)
        self.workers: list[WorkerProcess] = []

    def worker(self, name: str) -> WorkerProcess:
        env = worker_env(
            self.bootstrap, self.prefix, self.base / f"state-{name}", partitions=PARTITIONS
        )
        env.update({f"TRUST_{k.upper()}": v for k, v in SETTINGS.items()})
        worker = WorkerProcess(env=env, log_path=self.base / f"{name}.log")
        self.workers.append(worker)
        return worker

    def create_topics(self) -> None:
        env = worker_env(self.bootstrap, self.prefix, self.base / "topics", partitions=PARTITIONS)
        subprocess.run(
            [sys.executable, "-m", "streams", "topics"],
            cwd=REPO_ROOT,
            env={**os.environ, **env},
            check=True,
            capture_output=True,
            timeout=120,
        )

    async def produce_backlog(self, log: list[LoggedSignal]) -> None:
        self.create_topics()
        await produce(self.bootstrap, (s.record(self.prefix) for s in log))

    def stop(self) -> None:
        for worker in self.workers:
            worker.ensure_stopped()


def check_alive(*workers: WorkerProcess) -> Callable[[], None]:
    def check() -> None:
        for worker in workers:
            assert worker.running(), f"worker exited:\n{worker.log[-3000:]}"

    return check


async def produce_live(bootstrap: str, prefix: str, log: list[LoggedSignal]) -> float:
    """Send each signal when the wall clock reaches its time; how far behind, at most (s)."""
    behind = 0.0
    async with producer(bootstrap) as p:
        for signal in log:
            delay = signal.at_ms / 1000 - time.time()
            if delay > 0.002:
                await asyncio.sleep(delay)
            behind = max(behind, time.time() - signal.at_ms / 1000)
            topic, key, value = signal.record(prefix)
            await p.send(topic, value=value, key=key)
        await p.flush()
    return behind


async def run_live(way: Way, log: list[LoggedSignal], count: int) -> Outputs:
    worker = way.worker("live").start()
    worker.wait_until_ready()
    assert time.time() * 1000 < log[0].at_ms, "the worker took too long to start"
    behind = await produce_live(way.bootstrap, way.prefix, log)
    print(f"live: the producer was at most {behind * 1000:.0f} ms behind the records' times")
    async with Outputs(way.bootstrap, way.prefix) as outputs:
        await outputs.wait_for(count, 120, check_alive(worker))
    assert_applied_ahead(worker, "live")
    return outputs


async def run_backlog(way: Way, log: list[LoggedSignal], count: int) -> Outputs:
    await way.produce_backlog(log)
    worker = way.worker("backlog").start()
    async with Outputs(way.bootstrap, way.prefix) as outputs:
        await outputs.wait_for(count, 300, check_alive(worker))
    assert_applied_ahead(worker, "backlog")
    return outputs


def assert_applied_ahead(worker: WorkerProcess, name: str) -> None:
    """Critical signals were applied ahead of other agents' signals: the equal outputs of the
    ways show that doing so changes nothing."""
    status, metrics = get(worker.base_url, "/metrics")
    assert status == 200, metrics
    ahead = metric_sum(metrics, "trust_signals_applied_ahead") or 0
    print(f"{name}: {ahead:.0f} signals applied ahead of their turn")
    assert ahead > 0, f"{name}: no critical signal was applied ahead of its turn"


async def run_with_kills(way: Way, log: list[LoggedSignal], count: int) -> Outputs:
    await way.produce_backlog(log)
    worker = way.worker("killed").start()
    async with Outputs(way.bootstrap, way.prefix) as outputs:
        for kill, share in enumerate((0.2, 0.45, 0.7)):
            await outputs.wait_for(round(count * share), 300, check_alive(worker))
            worker.kill()
            if kill == 1:
                # This time the local state is lost too: restored from the changelog alone.
                shutil.rmtree(worker.env["TRUST_STATE_DIR"])
            worker.start()
        await outputs.wait_for(count, 300, check_alive(worker))
    return outputs


async def run_two_workers(way: Way, log: list[LoggedSignal], count: int) -> Outputs:
    await way.produce_backlog(log)
    first, second = way.worker("first").start(), way.worker("second").start()
    async with Outputs(way.bootstrap, way.prefix) as outputs:
        await outputs.wait_for(round(count * 0.4), 300, check_alive(first, second))
        first.kill()
        await outputs.wait_for(count, 300, check_alive(second))
    return outputs


def compare(name: str, outputs: Outputs, oracle: Expected, reference: Outputs | None) -> None:
    totals = outputs.totals()
    wrong = {k: (v, oracle.updates.get(k)) for k, v in totals.items() if oracle.updates.get(k) != v}
    missing = oracle.updates.keys() - totals.keys()
    assert not wrong and not missing, (
        f"{name}: {len(wrong)} updates differ from the oracle (e.g. "
        f"{list(wrong.items())[:3]}), {len(missing)} missing (e.g. {list(missing)[:3]})"
    )
    assert outputs.revoked() == oracle.revocations, f"{name}: revocations differ from the oracle"
    if reference is not None:
        differ = [k for k, v in outputs.updates.items() if reference.updates[k] != v]
        assert not differ, (
            f"{name}: {len(differ)} updates differ in bytes from the live run's, e.g. "
            f"{outputs.updates[differ[0]]!r} against {reference.updates[differ[0]]!r}"
        )
        # Byte for byte, but for the topic names in their triggers (each way has its own).
        assert outputs.revocations_as_of(reference.prefix) == sorted(
            reference.revocations.values()
        ), f"{name}: revocations differ in bytes from the live run's"


async def test_one_log_gives_the_same_outputs_live_as_a_backlog_through_kills_and_failover(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    # Times start once the live worker has had time to start, on a window boundary.
    start_ms = (int(time.time() * 1000) + 20_000) // WINDOW_MS * WINDOW_MS
    log = make_log(
        agents=AGENTS,
        signals=SIGNALS,
        start_ms=start_ms,
        span_ms=WINDOWS * WINDOW_MS,
        partitions=PARTITIONS,
    )
    oracle = expected(log, WINDOW_MS, GRACE_MS)
    count = len(oracle.updates)
    assert count > 5 * AGENTS and len(oracle.revocations) > AGENTS // 20
    ways = {
        name: Way(kafka_bootstrap, tmp_path, name)
        for name in ("live", "backlog", "killed", "failover")
    }
    try:
        live = await run_live(ways["live"], log, count)
        compare("live", live, oracle, None)
        for name, run in (
            ("backlog", run_backlog),
            ("killed", run_with_kills),
            ("failover", run_two_workers),
        ):
            outputs = await run(ways[name], log, count)
            compare(name, outputs, oracle, live)
            print(f"{name}: {len(outputs.updates)} updates ({outputs.repeats} repeats)")
    finally:
        for way in ways.values():
            way.stop()
