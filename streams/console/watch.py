"""``trust-streams watch``: follow the score, revocation or dead-letter topic.

Two ways to show what arrives: JSON lines (one message per line, the bytes as received; the
default when stdout is not a terminal), or, in a terminal, a live view drawn with plain ANSI escape
codes: for scores a table with the latest update of every agent, redrawn in place; for revocations
and dead letters a scrolling list. ``--max-messages`` and ``--timeout`` make it usable from
scripts: exit 0 once N messages have been shown (or on Ctrl-C), exit 1 when the timeout passes
first.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO, Protocol

import orjson

from streams.console import load_settings, quiet_client_logs, require_topics, run_async
from streams.console.safe_text import safe_bytes
from streams.console.views import EventList, OutputClosed, Received, ScoreTable
from streams.kafka.topics import TopicNames
from streams.settings import Settings

STREAMS = ("scores", "revocations", "deadletter")


def topic_of(names: TopicNames, stream: str) -> str:
    topics = {
        "scores": names.scores,
        "revocations": names.revocations,
        "deadletter": names.deadletter,
    }
    return topics[stream]


class Sink(Protocol):
    def started(self, topic: str, partitions: int, from_beginning: bool) -> None: ...

    def add(self, records: Sequence[Received]) -> None: ...

    def tick(self) -> None: ...

    def close(self) -> None: ...


# --- JSON lines -------------------------------------------------------------------------------


class JsonLines:
    """Each message on a line of its own, exactly as received (``null`` for an empty record);
    on a terminal, made safe to print first (a record is any bytes a producer sent, escape
    sequences included)."""

    def __init__(self, out: BinaryIO, terminal: bool = False) -> None:
        self.out = out
        self.terminal = terminal

    def started(self, topic: str, partitions: int, from_beginning: bool) -> None:
        pass

    def add(self, records: Sequence[Received]) -> None:
        try:
            for record in records:
                line = _one_line(record.value)
                if self.terminal:
                    line = safe_bytes(line).encode()
                self.out.write(line + b"\n")
            self.out.flush()
        except BrokenPipeError as exc:
            raise OutputClosed from exc

    def tick(self) -> None:
        pass

    def close(self) -> None:
        pass


def _one_line(value: bytes | None) -> bytes:
    if value is None:
        return b"null"
    if b"\n" not in value and b"\r" not in value:
        return value
    # Pretty-printed JSON from some other producer: compacted, so one message stays one line.
    try:
        return orjson.dumps(orjson.loads(value))
    except orjson.JSONDecodeError:
        return value.replace(b"\r", b"\\r").replace(b"\n", b"\\n")


# --- terminal views ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WatchOptions:
    stream: str
    from_beginning: bool = False
    max_messages: int | None = None
    timeout: float | None = None


@dataclass(slots=True)
class _Progress:
    received: int = 0


async def watch(settings: Settings, options: WatchOptions, sink: Sink) -> int:
    """Follow the topic until N messages, the timeout, Ctrl-C or SIGTERM; the exit status."""
    topic = topic_of(TopicNames(settings.topic_prefix), options.stream)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    handled: list[signal.Signals] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)
            handled.append(signum)
    progress = _Progress()
    follower = asyncio.create_task(_follow(settings, topic, options, sink, progress))
    stopper = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait(
            {follower, stopper}, timeout=options.timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if follower in done:
            return follower.result()
        if stopper in done:
            return 0
        print(f"trust-streams: {_timeout_message(topic, options, progress)}", file=sys.stderr)
        return 1
    finally:
        for task in (follower, stopper):
            task.cancel()
        await asyncio.gather(follower, stopper, return_exceptions=True)
        sink.close()
        for signum in handled:
            loop.remove_signal_handler(signum)


def _timeout_message(topic: str, options: WatchOptions, progress: _Progress) -> str:
    got = progress.received
    if options.max_messages is not None:
        return (
            f"timed out after {options.timeout:g} s with {got} of {options.max_messages} "
            f"messages from {topic}"
        )
    if got == 0:
        return f"timed out after {options.timeout:g} s: no messages on {topic}"
    return f"timed out after {options.timeout:g} s ({got} messages from {topic})"


async def _follow(
    settings: Settings, topic: str, options: WatchOptions, sink: Sink, progress: _Progress
) -> int:
    from aiokafka import TopicPartition

    from streams.kafka import clients

    counts = await require_topics(settings, [topic])
    partitions = [TopicPartition(topic, p) for p in range(counts[topic])]
    consumer = clients.consumer(
        settings,
        purpose="cli-watch",
        auto_offset_reset="earliest" if options.from_beginning else "latest",
        request_timeout_ms=15000,
    )
    consumer.assign(partitions)
    try:
        await consumer.start()
        if options.from_beginning:
            await consumer.seek_to_beginning(*partitions)
        else:
            await consumer.seek_to_end(*partitions)
        sink.started(topic, len(partitions), options.from_beginning)
        while options.max_messages is None or progress.received < options.max_messages:
            wanted = (
                None if options.max_messages is None else options.max_messages - progress.received
            )
            batch = await consumer.getmany(timeout_ms=250, max_records=wanted)
            records = [
                Received(m.topic, m.partition, m.offset, m.value)
                for tp in sorted(batch)
                for m in batch[tp]
            ]
            if records:
                sink.add(records)
                progress.received += len(records)
            sink.tick()
        return 0
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(consumer.stop(), timeout=10)


# --- the command ------------------------------------------------------------------------------


def command(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    quiet_client_logs(settings)
    options = WatchOptions(
        stream=args.stream,
        from_beginning=args.from_beginning,
        max_messages=args.max_messages,
        timeout=args.timeout,
    )
    sink: Sink
    if args.json or not sys.stdout.isatty():
        sink = JsonLines(sys.stdout.buffer, terminal=sys.stdout.isatty())
    elif options.stream == "scores":
        sink = ScoreTable(sys.stdout)
    else:
        sink = EventList(sys.stdout, options.stream)
    try:
        return run_async(settings, watch(settings, options, sink))
    except OutputClosed:
        # Nobody reads any more; keep the interpreter from complaining while it flushes at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:  # Ctrl-C before the event loop took over the signal
        return 0
