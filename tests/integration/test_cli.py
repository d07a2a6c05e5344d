"""The command line against a real broker, driven as users drive it: ``python -m streams ...``.

Every test has its own topic prefix. Waits are deadlines (subprocess timeouts, reads with a
deadline), never sleeps.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import pty
import queue
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streams.messages import ScoreUpdate, Signal
from tests.support.broker import REPO_ROOT
from tests.support.kafka_io import Record, consume, create_topics, produce

PARTITIONS = 3
TOPIC_COUNT = 12  # five signal topics and seven of the service's own
EXAMPLES = REPO_ROOT / "schemas" / "examples"


def cli_env(bootstrap: str, prefix: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRUST_")}
    env.update(
        {
            "TRUST_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "TRUST_TOPIC_PREFIX": prefix,
            "TRUST_PARTITIONS": str(PARTITIONS),
            "PYTHONUNBUFFERED": "1",
            **extra,
        }
    )
    return env


def cli(
    env: dict[str, str], *args: str, stdin: str = "", timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams", *args],
        cwd=REPO_ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def shown(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, shown(result)
    assert "Traceback" not in result.stderr, shown(result)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("trust-streams: error: "), shown(result)
    for fragment in fragments:
        assert fragment in lines[0], shown(result)


def all_topics(prefix: str) -> list[str]:
    dims = (
        "policy_compliance",
        "resource_efficiency",
        "output_quality",
        "security_posture",
        "collaboration_health",
    )
    return [
        *(f"{prefix}signals.{d}" for d in dims),
        f"{prefix}trust.internal.ticks",
        f"{prefix}trust.internal.commands",
        f"{prefix}trust.scores",
        f"{prefix}trust.revocations",
        f"{prefix}trust.internal.agent-state",
        f"{prefix}signals.deadletter",
        f"{prefix}trust.config",
    ]


def partitions_shown(topic: str) -> str:
    # The config topic has one partition: every worker reads every update in one order.
    return "1 partition" if topic.endswith(".trust.config") else f"{PARTITIONS} partitions"


async def existing_topics(bootstrap: str, prefix: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        return {t for t in await admin.list_topics() if t.startswith(prefix)}
    finally:
        await admin.close()


async def records_on(bootstrap: str, topics: list[str]) -> int:
    """How many records the topics hold (sum of end offsets), read without consuming."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await consumer.start()
    try:
        counts = await partition_counts(bootstrap, topics)
        ends = await consumer.end_offsets(
            [TopicPartition(t, p) for t, n in counts.items() for p in range(n)]
        )
        return sum(ends.values())
    finally:
        await consumer.stop()


async def partition_counts(bootstrap: str, topics: list[str]) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
        return {d["topic"]: len(d["partitions"]) for d in described if d["error_code"] == 0}
    finally:
        await admin.close()


@pytest.fixture
def env(kafka_bootstrap: str, topic_prefix: str) -> dict[str, str]:
    return cli_env(kafka_bootstrap, topic_prefix)


@pytest.fixture
def topics(env: dict[str, str]) -> dict[str, str]:
    """The prefix's topics, created with the CLI itself."""
    result = cli(env, "topics")
    assert result.returncode == 0, shown(result)
    return env


def read_all(
    bootstrap: str, topics: list[str], count: int, what: str, timeout: float = 30
) -> list[Record]:
    return asyncio.run(
        consume(bootstrap, topics, until=lambda r: len(r) >= count, timeout=timeout, what=what)
    )


# --- topics ------------------------------------------------------------------------------------


def test_topics_creates_then_check_passes(
    env: dict[str, str], kafka_bootstrap: str, topic_prefix: str
) -> None:
    created = cli(env, "topics")
    assert created.returncode == 0, shown(created)
    for topic in all_topics(topic_prefix):
        assert f"{topic}\t{partitions_shown(topic)} (created)" in created.stdout, shown(created)
    assert f"{TOPIC_COUNT} topics ready" in created.stdout
    assert asyncio.run(existing_topics(kafka_bootstrap, topic_prefix)) == set(
        all_topics(topic_prefix)
    )

    again = cli(env, "topics")
    assert again.returncode == 0 and "(created)" not in again.stdout, shown(again)

    checked = cli(env, "topics", "--check")
    assert checked.returncode == 0, shown(checked)
    assert "(created)" not in checked.stdout
    for topic in all_topics(topic_prefix):
        assert f"{topic}\t{partitions_shown(topic)}" in checked.stdout, shown(checked)

    wrong_count = cli({**env, "TRUST_PARTITIONS": "4"}, "topics", "--check")
    assert_one_line_error(wrong_count, "TRUST_PARTITIONS is 4", f"TRUST_PARTITIONS={PARTITIONS}")


def test_topics_check_fails_without_creating(
    env: dict[str, str], kafka_bootstrap: str, topic_prefix: str
) -> None:
    result = cli(env, "topics", "--check")
    assert_one_line_error(result, f"none of the {TOPIC_COUNT} topics", repr(topic_prefix))
    assert "trust-streams topics" in result.stderr  # says what to do
    assert asyncio.run(existing_topics(kafka_bootstrap, topic_prefix)) == set()


def test_topics_check_names_a_missing_dead_letter_topic(
    env: dict[str, str], kafka_bootstrap: str, topic_prefix: str
) -> None:
    deadletter = f"{topic_prefix}signals.deadletter"
    others = [t for t in all_topics(topic_prefix) if t != deadletter]
    asyncio.run(create_topics(kafka_bootstrap, others, partitions=PARTITIONS))
    assert_one_line_error(cli(env, "topics", "--check"), f"topic {deadletter} does not exist")


def test_topics_check_names_mismatched_partition_counts(
    env: dict[str, str], kafka_bootstrap: str, topic_prefix: str
) -> None:
    scores = f"{topic_prefix}trust.scores"
    asyncio.run(create_topics(kafka_bootstrap, [scores], partitions=2))
    rest = [t for t in all_topics(topic_prefix) if t != scores]
    asyncio.run(create_topics(kafka_bootstrap, rest, partitions=PARTITIONS))
    assert_one_line_error(cli(env, "topics", "--check"), "one partition count", f"{scores}=2")


# --- publish -----------------------------------------------------------------------------------


def test_publish_from_flags(
    topics: dict[str, str], kafka_bootstrap: str, topic_prefix: str
) -> None:
    # The flags override the environment, which points nowhere.
    env = {**topics, "TRUST_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "TRUST_TOPIC_PREFIX": "x."}
    result = cli(
        env,
        "publish",
        "--bootstrap-servers",
        kafka_bootstrap,
        "--topic-prefix",
        topic_prefix,
        "--agent",
        "did:mesh:agent-42",
        "--dimension",
        "security_posture",
        "--value",
        "0.2",
        "--source",
        "cli",
        "--details",
        "opened a port",
        "--signal-id",
        "sig-1",
        "--trace-id",
        "trace-9",
        "--timestamp",
        "2026-11-24T07:57:31+02:00",
    )
    assert result.returncode == 0, shown(result)
    assert result.stdout == "published 1 signal\n" and result.stderr == "", shown(result)

    topic = f"{topic_prefix}signals.security_posture"
    [record] = read_all(kafka_bootstrap, [topic], 1, "the published signal")
    assert record.key == b"did:mesh:agent-42"
    body = record.json()
    assert body == {
        "agent_did": "did:mesh:agent-42",
        "dimension": "security_posture",
        "value": 0.2,
        "source": "cli",
        "details": "opened a port",
        "signal_id": "sig-1",
        "trace_id": "trace-9",
        "timestamp": "2026-11-24T05:57:31Z",
    }
    Signal.model_validate_json(record.value or b"")


def test_publish_from_stdin(
    topics: dict[str, str], kafka_bootstrap: str, topic_prefix: str
) -> None:
    sent = [
        {"agent_did": "did:mesh:a", "dimension": "output_quality", "value": 0.9, "source": "qa"},
        {"agent_did": "did:mesh:b", "dimension": "policy_compliance", "value": 0, "source": "pe"},
        {
            "agent_did": "did:mesh:a",
            "dimension": "output_quality",
            "value": 0.1,
            "source": "qa",
            "signal_id": "s-3",
            "timestamp": "2026-11-24T05:57:31Z",
        },
    ]
    stdin = "\n".join(json.dumps(s) for s in sent[:2]) + "\n\n" + json.dumps(sent[2]) + "\n"
    result = cli(topics, "publish", "--stdin", stdin=stdin)
    assert result.returncode == 0, shown(result)
    assert result.stdout == "published 3 signals\n", shown(result)

    quality = f"{topic_prefix}signals.output_quality"
    policy = f"{topic_prefix}signals.policy_compliance"
    records = read_all(kafka_bootstrap, [quality, policy], 3, "the three published signals")
    assert len(records) == 3
    on_quality = [r.json() for r in records if r.topic == quality]
    assert [(s["agent_did"], s["value"]) for s in on_quality] == [
        ("did:mesh:a", 0.9),
        ("did:mesh:a", 0.1),
    ]  # one agent, one partition: in the order of the lines
    assert on_quality[1]["signal_id"] == "s-3"
    [on_policy] = [r for r in records if r.topic == policy]
    assert on_policy.key == b"did:mesh:b" and on_policy.json()["value"] == 0.0


def test_publish_stdin_with_an_invalid_line_sends_nothing(
    topics: dict[str, str], kafka_bootstrap: str, topic_prefix: str
) -> None:
    good = {"agent_did": "did:mesh:a", "dimension": "output_quality", "value": 0.9, "source": "qa"}
    stdin = "\n".join(json.dumps(x) for x in (good, good, {**good, "value": 1.2}, good)) + "\n"
    result = cli(topics, "publish", "--stdin", stdin=stdin)
    assert_one_line_error(result, "line 3", "value", "1.2")
    signal_topics = all_topics(topic_prefix)[:5]
    assert len(asyncio.run(partition_counts(kafka_bootstrap, signal_topics))) == 5
    assert asyncio.run(records_on(kafka_bootstrap, signal_topics)) == 0


def test_publish_without_topics_is_a_clear_error(env: dict[str, str], topic_prefix: str) -> None:
    started = time.monotonic()
    result = cli(env, "publish", "--agent", "did:mesh:a", "--dimension", "output_quality",
                 "--value", "0.5")  # fmt: skip
    assert_one_line_error(result, f"topic {topic_prefix}signals.output_quality does not exist")
    assert time.monotonic() - started < 20  # not the producer's 40 s metadata wait


# --- watch -------------------------------------------------------------------------------------


def score_updates(count: int) -> list[tuple[str, bytes, bytes]]:
    """Valid score updates (the schema example, per agent), as (agent, key, compact JSON)."""
    example = json.loads((EXAMPLES / "score_update.json").read_text())
    made = []
    for i in range(count):
        update = copy.deepcopy(example)
        update["agent_did"] = f"did:mesh:agent-{i}"
        update["total_score"] = 400 + i
        update["score_change"] = update["total_score"] - update["previous_score"]
        ScoreUpdate.model_validate(update)
        made.append((update["agent_did"], update["agent_did"].encode(), orjson.dumps(update)))
    return made


def test_watch_scores_prints_exactly_the_messages(
    topics: dict[str, str], kafka_bootstrap: str, topic_prefix: str
) -> None:
    scores = f"{topic_prefix}trust.scores"
    updates = score_updates(7)
    asyncio.run(produce(kafka_bootstrap, [(scores, key, value) for _, key, value in updates]))

    args = ("watch", "scores", "--json", "--from-beginning", "--timeout", "60")
    result = cli(topics, *args, "--max-messages", "7")
    assert result.returncode == 0, shown(result)
    assert result.stderr == "", shown(result)
    printed = result.stdout.encode().splitlines()
    assert sorted(printed) == sorted(value for _, _, value in updates)

    fewer = cli(topics, *args, "--max-messages", "3")
    assert fewer.returncode == 0, shown(fewer)
    some = fewer.stdout.encode().splitlines()
    assert len(some) == 3 and set(some) <= {value for _, _, value in updates}


def test_watch_times_out_with_exit_1(topics: dict[str, str], topic_prefix: str) -> None:
    started = time.monotonic()
    result = cli(topics, "watch", "revocations", "--json", "--timeout", "3")
    elapsed = time.monotonic() - started
    assert result.returncode == 1, shown(result)
    assert result.stdout == ""
    assert result.stderr == (
        f"trust-streams: timed out after 3 s: no messages on {topic_prefix}trust.revocations\n"
    )
    assert 3 <= elapsed < 30

    partial = cli(topics, "watch", "revocations", "--json", "--timeout", "2", "--max-messages", "1")
    assert partial.returncode == 1 and "with 0 of 1 messages" in partial.stderr, shown(partial)


def test_watch_a_missing_topic_is_a_clear_error(env: dict[str, str], topic_prefix: str) -> None:
    result = cli(env, "watch", "deadletter", "--timeout", "30")
    assert_one_line_error(result, f"topic {topic_prefix}signals.deadletter does not exist")


class LineReader:
    """A subprocess's stdout, line by line, read with a deadline."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        self.lines: queue.Queue[bytes] = queue.Queue()
        stream = process.stdout
        threading.Thread(
            target=lambda: [self.lines.put(line) for line in iter(stream.readline, b"")],
            daemon=True,
        ).start()

    def next(self, timeout: float) -> bytes | None:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            return None


@pytest.fixture
def popen() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def revocation(agent: str, revocation_id: str) -> bytes:
    body = json.loads((EXAMPLES / "revocation.json").read_text())
    body.update(agent_did=agent, revocation_id=revocation_id)
    return orjson.dumps(body)


def test_watch_follows_from_now_and_stops_cleanly_on_ctrl_c(
    topics: dict[str, str],
    kafka_bootstrap: str,
    topic_prefix: str,
    popen: list[subprocess.Popen[bytes]],
) -> None:
    topic = f"{topic_prefix}trust.revocations"
    old = revocation("did:mesh:old", "old")
    asyncio.run(produce(kafka_bootstrap, [(topic, b"did:mesh:old", old)]))

    process = subprocess.Popen(
        [sys.executable, "-m", "streams", "watch", "revocations"],  # stdout is a pipe: JSON lines
        cwd=REPO_ROOT,
        env=topics,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    popen.append(process)
    reader = LineReader(process)
    # When the watcher has reached the end of the topic is not visible from outside: publish a new
    # revocation until one shows up, within a deadline.
    sent: list[bytes] = []
    first = None
    deadline = time.monotonic() + 60
    while first is None and time.monotonic() < deadline and process.poll() is None:
        fresh = revocation("did:mesh:new", f"new-{uuid.uuid4().hex[:8]}")
        sent.append(fresh)
        asyncio.run(produce(kafka_bootstrap, [(topic, b"did:mesh:new", fresh)]))
        first = reader.next(timeout=1.0)
    assert first is not None, f"nothing watched within 60 s; exit {process.poll()}"
    assert first.rstrip(b"\n") in sent  # a message from after the start, never the old one

    process.send_signal(signal.SIGINT)
    _, errors = process.communicate(timeout=30)
    assert process.returncode == 0, errors.decode()
    assert errors == b""


TABLE_LIMITS = ("--max-messages", "3", "--timeout", "60")


def test_watch_scores_in_a_terminal_is_a_table(
    topics: dict[str, str], kafka_bootstrap: str, topic_prefix: str
) -> None:
    scores = f"{topic_prefix}trust.scores"
    updates = score_updates(3)
    asyncio.run(produce(kafka_bootstrap, [(scores, key, value) for _, key, value in updates]))

    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "streams", "watch", "scores", "--from-beginning", *TABLE_LIMITS],
        cwd=REPO_ROOT,
        env={**topics, "COLUMNS": "120", "LINES": "30"},
        stdout=terminal,
        stderr=subprocess.PIPE,
    )
    os.close(terminal)
    screen = read_terminal(controller, process, timeout=90)
    assert process.returncode == 0, screen
    assert "\x1b[" in screen and "{" not in screen  # drawn, not JSON
    assert "3 agents, 3 updates" in screen
    for agent, _, _ in updates:
        assert agent in screen
    assert screen.rstrip().endswith("\x1b[?25h")  # the cursor is shown again


def read_terminal(controller: int, process: subprocess.Popen[bytes], timeout: float) -> str:
    out = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # the terminal closed: the process has exited
                    break
                if not chunk:
                    break
                out.extend(chunk)
            elif process.poll() is not None:
                break
        process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(controller)
    return out.decode(errors="replace")
