"""The live demo: a broker, a worker and a simulated fleet, with scores and revocations on screen.

``trust-streams demo`` starts the local development broker when no broker is configured, a
worker on fresh topics, and a fleet of agents (well-behaved, degrading and malicious ones) that
publish signals; it shows every score update and revocation as they happen, and stops everything it
started on Ctrl-C.

``trust-streams demo --fleet-only`` starts nothing: it runs the fleet against the broker and topics
the settings name (``TRUST_KAFKA_BOOTSTRAP_SERVERS``, ``TRUST_TOPIC_PREFIX``), for workers that run
elsewhere (docker-compose.yml runs it beside its worker).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from streams.errors import TrustServiceError
from streams.kafka import clients
from streams.kafka.topics import TopicNames
from streams.scoring.model import DIMENSIONS

REPO_ROOT = Path(__file__).resolve().parent.parent
LOCAL_BROKER = REPO_ROOT / "deploy" / "local" / "kafka"
BEHAVIOURS = ("well-behaved", "well-behaved", "well-behaved", "degrading", "malicious")


class DemoError(TrustServiceError):
    """The demo could not start; the message says what to do."""


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_local_broker() -> str:
    if not LOCAL_BROKER.exists():
        raise DemoError(
            "no broker configured and no local broker script here; set "
            "TRUST_KAFKA_BOOTSTRAP_SERVERS to a Kafka broker"
        )
    _say("demo: starting the local Kafka broker (the first start fetches its jars, ~20 s)...")
    result = subprocess.run(
        [str(LOCAL_BROKER), "start"], stdout=subprocess.PIPE, text=True, check=False
    )
    if result.returncode != 0:
        raise DemoError("the local Kafka broker did not start; see the lines above")
    return result.stdout.strip().splitlines()[-1]


@dataclass
class Agent:
    did: str
    behaviour: str
    score: int = 500
    change: int = 0
    tier: str = "standard"
    at_risk: bool = False
    revoked: bool = False
    updates: int = 0


@dataclass
class Board:
    agents: dict[str, Agent]
    revocations: list[str] = field(default_factory=list)
    updates: int = 0
    signals: int = 0
    started: float = field(default_factory=time.monotonic)


def _signal_value(rng: random.Random, behaviour: str, age_s: float) -> tuple[str, float]:
    dimension = rng.choice(DIMENSIONS).value
    if behaviour == "well-behaved":
        return dimension, rng.choice((1.0, 1.0, 0.95, rng.uniform(0.7, 1.0)))
    if behaviour == "degrading":
        return dimension, max(0.3, rng.uniform(0.5, 1.0) - age_s / 120)
    # Malicious agents probe security boundaries and ignore policy.
    dimension = rng.choice(("security_posture", "policy_compliance", "output_quality"))
    return dimension, rng.choice((0.0, 0.0, 0.1, 0.6))


async def _run_fleet(
    bootstrap: clients.KafkaConnection,
    names: TopicNames,
    board: Board,
    stop: asyncio.Event,
    rate: float,
) -> None:
    rng = random.Random(7)
    async with clients.producer(bootstrap, purpose="demo-fleet", linger_ms=5) as producer:
        while not stop.is_set():
            age = time.monotonic() - board.started
            for agent in board.agents.values():
                if rng.random() > rate:
                    continue
                dimension, value = _signal_value(rng, agent.behaviour, age)
                body = {"agent_did": agent.did, "value": value, "source": "demo-fleet"}
                topic = names.signals[[d.value for d in DIMENSIONS].index(dimension)]
                await producer.send(topic, orjson.dumps(body), key=agent.did.encode())
                board.signals += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.5)


def _render(board: Board, live: bool, window_s: float) -> str:
    rows = sorted(board.agents.values(), key=lambda a: (not a.revoked, a.score))
    lines = [
        f"trust-streams demo | {len(board.agents)} agents | {board.signals} signals | "
        f"{board.updates} score updates | {len(board.revocations)} revocations | "
        f"{window_s:g} s windows | Ctrl-C stops",
        "",
        f"{'agent':<28} {'behaviour':<13} {'score':>5} {'change':>7}  {'tier':<17} status",
    ]
    for a in rows:
        status = "REVOKED" if a.revoked else ("at risk" if a.at_risk else "")
        change = f"{a.change:+d}" if a.updates else ""
        shown = str(a.score) if a.updates else "-"
        lines.append(f"{a.did:<28} {a.behaviour:<13} {shown:>5} {change:>7}  {a.tier:<17} {status}")
    lines += ["", "latest revocations:"] + (board.revocations[-5:] or ["  (none yet)"])
    text = "\n".join(lines)
    return "\x1b[H\x1b[2J" + text if live else text


async def _watch(
    bootstrap: clients.KafkaConnection,
    names: TopicNames,
    board: Board,
    stop: asyncio.Event,
    live: bool,
    window_s: float,
    from_beginning: bool = True,
) -> None:
    consumer = clients.consumer(
        bootstrap,
        names.scores,
        names.revocations,
        purpose="demo-watch",
        auto_offset_reset="earliest" if from_beginning else "latest",
    )
    await consumer.start()
    last_render = 0.0
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    _apply(record.topic, orjson.loads(record.value), names, board, live)
            if live and time.monotonic() - last_render > 1.0:
                print(_render(board, live=True, window_s=window_s), flush=True)
                last_render = time.monotonic()
    finally:
        await consumer.stop()


def _apply(topic: str, body: dict[str, Any], names: TopicNames, board: Board, live: bool) -> None:
    agent = board.agents.get(body["agent_did"])
    if agent is None:
        return
    if topic == names.scores:
        board.updates += 1
        agent.updates += 1
        agent.score, agent.change = body["total_score"], body["score_change"]
        agent.tier, agent.at_risk, agent.revoked = body["tier"], body["at_risk"], body["revoked"]
        if not live:
            print(
                f"[score] {agent.did} ({agent.behaviour}) {agent.score} {agent.change:+d} "
                f"{agent.tier}{' REVOKED' if agent.revoked else ''}",
                flush=True,
            )
    else:
        agent.revoked = True
        line = f"[REVOKED] {agent.did} ({agent.behaviour}): {body['reason']}"
        board.revocations.append("  " + line)
        if not live:
            print(line, flush=True)


def _start_worker(
    bootstrap: str, prefix: str, window_s: float, state: Path
) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "TRUST_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "TRUST_TOPIC_PREFIX": prefix,
        "TRUST_APP_ID": f"{prefix}scorer",
        "TRUST_WINDOW_SECONDS": str(window_s),
        "TRUST_GRACE_SECONDS": str(min(2.0, window_s / 2)),
        "TRUST_PARTITIONS": "3",
        "TRUST_STATE_DIR": str(state),
        "TRUST_WEB_PORT": str(_free_port()),
        "TRUST_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "streams", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(state / "worker.log").open("w"),
        text=True,
    )


def _board(agents: int) -> Board:
    return Board(
        {
            f"did:mesh:demo-{i:03d}": Agent(f"did:mesh:demo-{i:03d}", BEHAVIOURS[i % 5])
            for i in range(agents)
        }
    )


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    return stop


async def _main(args: argparse.Namespace, bootstrap: clients.KafkaConnection) -> None:
    prefix = f"demo-{int(time.time())}."
    names = TopicNames(prefix)
    state = Path(tempfile.mkdtemp(prefix="trust-demo-"))
    _say(f"demo: starting a worker on topics {prefix}* ...")
    # The worker inherits the environment, so the same security settings.
    worker = _start_worker(bootstrap.bootstrap_servers, prefix, args.window_seconds, state)
    board = _board(args.agents)
    stop = _stop_on_signals()
    live = sys.stdout.isatty()
    try:
        await _wait_for_topics(bootstrap, names, worker, state, stop)
        _say("demo: worker ready; the fleet is publishing signals. Ctrl-C stops everything.")
        await asyncio.gather(
            _run_fleet(bootstrap, names, board, stop, rate=0.6),
            _watch(bootstrap, names, board, stop, live, args.window_seconds),
        )
    finally:
        _say("demo: stopping the worker...")
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
        shutil.rmtree(state, ignore_errors=True)
    if live:
        print(_render(board, live=False, window_s=args.window_seconds))


async def _fleet(
    args: argparse.Namespace, bootstrap: clients.KafkaConnection, names: TopicNames, window_s: float
) -> None:
    """The fleet and the scores it earns, on topics a worker elsewhere serves; until stopped."""
    board = _board(args.agents)
    stop = _stop_on_signals()
    live = sys.stdout.isatty()
    _say(f"demo: waiting for the worker's topics {names.prefix}* on {bootstrap.bootstrap_servers}")
    await _wait_for_topics(bootstrap, names, None, None, stop)
    _say(f"demo: the fleet of {args.agents} agents is publishing signals. Ctrl-C stops it.")
    await asyncio.gather(
        _run_fleet(bootstrap, names, board, stop, rate=0.6),
        # From now: what a restarted fleet shows is what happens while it runs.
        _watch(bootstrap, names, board, stop, live, window_s, from_beginning=False),
    )
    if live:
        print(_render(board, live=False, window_s=window_s))


async def _wait_for_topics(
    bootstrap: clients.KafkaConnection,
    names: TopicNames,
    worker: subprocess.Popen[str] | None,
    state: Path | None,
    stop: asyncio.Event,
) -> None:
    """The worker creates the topics and joins its group; wait for its score topic to exist."""
    from streams.kafka.topicadmin import describe_partition_counts

    admin = clients.admin(bootstrap, purpose="demo-admin")
    await admin.start()
    try:
        deadline = time.monotonic() + 120
        while not stop.is_set():
            if worker is not None and state is not None and worker.poll() is not None:
                log = (state / "worker.log").read_text()[-2000:]
                raise DemoError(f"the worker exited with {worker.returncode}:\n{log}")
            if names.scores in await describe_partition_counts(admin, [names.scores]):
                return
            if time.monotonic() > deadline:
                raise DemoError(f"no worker created the topics {names.prefix}* within 120 s")
            await asyncio.sleep(0.5)
    finally:
        await admin.close()


def run_fleet(args: argparse.Namespace) -> int:
    """``demo --fleet-only``: the fleet alone, against the configured broker and topics."""
    from streams.settings import Settings

    if not os.environ.get("TRUST_KAFKA_BOOTSTRAP_SERVERS", "").strip():
        raise DemoError(
            "--fleet-only starts no broker and no worker: set TRUST_KAFKA_BOOTSTRAP_SERVERS to "
            "the broker a worker uses (and TRUST_TOPIC_PREFIX to its prefix, when not the default)"
        )
    settings = Settings()  # the command line has checked the settings
    connection = clients.KafkaConnection.from_settings(settings)
    names = TopicNames(settings.topic_prefix)
    asyncio.run(_fleet(args, connection, names, settings.window_seconds))
    _say("demo: stopped.")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from streams.settings import Settings

    if getattr(args, "fleet_only", False):
        return run_fleet(args)
    security = Settings().kafka_security  # the command line has checked the settings
    started_broker = False
    bootstrap = os.environ.get("TRUST_KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if not bootstrap:
        if security.security_protocol != "PLAINTEXT":
            raise DemoError(
                "TRUST_KAFKA_SECURITY_PROTOCOL is set but TRUST_KAFKA_BOOTSTRAP_SERVERS is not: "
                "the local broker the demo starts is plaintext; name the secured broker to use it"
            )
        bootstrap = _start_local_broker()
        started_broker = True
    try:
        asyncio.run(_main(args, clients.KafkaConnection(bootstrap, security=security)))
    finally:
        if started_broker and os.environ.get("TRUST_DEMO_KEEP_BROKER") != "1":
            _say("demo: stopping the local Kafka broker...")
            subprocess.run([str(LOCAL_BROKER), "stop"], check=False, capture_output=True)
    _say("demo: stopped.")
    return 0
