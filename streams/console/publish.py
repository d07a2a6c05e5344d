"""``trust-streams publish``: send signals, from flags or as JSON lines from stdin.

Every signal is validated before anything is sent, by the SDK's own rules
(:func:`streams.sdk.prepare_signal`, the contract of :class:`streams.messages.Signal`), plus a
required ``dimension``, no unknown fields and the worker's size limit. With ``--stdin`` the whole
input is read and checked first, so a batch with one invalid line sends nothing at all. Sending
goes through :class:`streams.sdk.SignalPublisher`, which keys each record by the agent's DID and
picks the topic of its dimension.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO

import orjson
from aiokafka.errors import KafkaError
from pydantic import AwareDatetime, TypeAdapter, ValidationError

from streams.console import (
    UserError,
    kafka_error_message,
    load_settings,
    quiet_client_logs,
    require_topics,
    run_async,
)
from streams.kafka.topics import TopicNames
from streams.messages import Signal
from streams.scoring.model import DIMENSIONS, Dimension
from streams.settings import Settings

#: Fields a signal object may have.
FIELDS: tuple[str, ...] = tuple(Signal.model_fields)
DIMENSION_NAMES = ", ".join(d.value for d in DIMENSIONS)
#: In flag mode, problems are named by the flag that set the field.
FLAG_OF_FIELD = {
    "agent_did": "--agent",
    "dimension": "--dimension",
    "value": "--value",
    "source": "--source",
    "details": "--details",
    "trace_id": "--trace-id",
    "signal_id": "--signal-id",
    "timestamp": "--timestamp",
}
#: Attributes of the parsed arguments that describe one signal (not allowed with ``--stdin``).
_SIGNAL_FLAGS = (
    "agent",
    "dimension",
    "value",
    "source",
    "details",
    "trace_id",
    "signal_id",
    "timestamp",
)
#: ``--source`` when not given.
DEFAULT_SOURCE = "cli"

_TIMESTAMP = TypeAdapter(AwareDatetime)


@dataclass(frozen=True, slots=True)
class PendingSignal:
    """A validated signal: where it came from (for messages) and the SDK call that sends it."""

    where: str
    agent_did: str
    dimension: Dimension
    value: float
    source: str
    details: str | None = None
    trace_id: str | None = None
    signal_id: str | None = None
    timestamp: datetime | None = None


# --- validation -------------------------------------------------------------------------------


def _shown(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _timestamp(value: object, name: str) -> datetime | None:
    """An ISO 8601 text with a zone as an aware datetime (the JSON reading of the contract)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name}: must be ISO 8601 text with a zone, got {_shown(value)}")
    try:
        return _TIMESTAMP.validate_json(orjson.dumps(value))
    except ValidationError as exc:
        problem = str(exc.errors(include_url=False)[0]["msg"])
        raise ValueError(
            f"{name}: {problem[:1].lower()}{problem[1:]}; expected ISO 8601 with a zone, e.g. "
            f"2026-11-24T05:57:31Z (got {_shown(value)})"
        ) from None


def validate(
    obj: object, where: str, max_bytes: int, names: Mapping[str, str] | None = None
) -> PendingSignal:
    """One signal object (parsed JSON); raises :class:`UserError` naming ``where`` and the problem.

    The checks the SDK makes before sending (and the worker after receiving), plus a required
    ``dimension`` and no unknown fields (a misspelt optional field would otherwise be dropped).
    """
    from streams.sdk import InvalidSignal, prepare_signal

    names = names or {}
    if not isinstance(obj, dict):
        raise UserError(
            f"{where}: expected a JSON object with agent_did, dimension, value and source, "
            f"got {type(obj).__name__}"
        )
    unknown = sorted(set(obj) - set(FIELDS))
    if unknown:
        listed = ", ".join(repr(k) for k in unknown)
        raise UserError(f"{where}: unknown field {listed} (known: {', '.join(FIELDS)})")
    for required in ("agent_did", "dimension", "value", "source"):
        if obj.get(required) is None:
            choices = f" (one of {DIMENSION_NAMES})" if required == "dimension" else ""
            raise UserError(f"{where}: {names.get(required, required)} is required{choices}")
    fields: dict[str, Any] = {k: obj.get(k) for k in FIELDS}
    try:
        fields["timestamp"] = _timestamp(obj.get("timestamp"), names.get("timestamp", "timestamp"))
    except ValueError as exc:
        raise UserError(f"{where}: {exc}") from None
    try:
        record = prepare_signal(**fields)
    except InvalidSignal as exc:
        raise UserError(f"{where}: {names.get(exc.field, exc.field)}: {exc.problem}") from None
    if len(record.value) > max_bytes:
        raise UserError(
            f"{where}: the encoded signal is {len(record.value)} bytes, over the worker's limit "
            f"of {max_bytes} (TRUST_MAX_MESSAGE_BYTES); shorten the text fields"
        )
    return PendingSignal(where=where, **{**fields, "dimension": record.dimension})


def validate_line(line: bytes, number: int, max_bytes: int) -> PendingSignal:
    where = f"line {number}"
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise UserError(f"{where}: not valid JSON ({exc})") from None
    return validate(obj, where, max_bytes)


def signals_from_lines(lines: Iterable[bytes], max_bytes: int) -> list[PendingSignal]:
    """Validate every line (blank lines are skipped); the first invalid one raises."""
    return [
        validate_line(line, number, max_bytes)
        for number, line in enumerate(lines, start=1)
        if line.strip()
    ]


def read_stdin(stream: BinaryIO, max_bytes: int) -> list[PendingSignal]:
    if stream.isatty():
        print("reading signals as JSON lines from stdin; end with Ctrl-D", file=sys.stderr)
    return signals_from_lines(stream, max_bytes)


def signal_from_flags(args: argparse.Namespace, max_bytes: int) -> PendingSignal:
    required = (("--agent", "agent"), ("--dimension", "dimension"), ("--value", "value"))
    missing = [flag for flag, attr in required if getattr(args, attr) is None]
    if missing:
        raise UserError(
            f"publish needs {', '.join(missing)} (or --stdin to read JSON lines from stdin)"
        )
    obj = {
        "agent_did": args.agent,
        "dimension": args.dimension,
        "value": args.value,
        "source": DEFAULT_SOURCE if args.source is None else args.source,
        "details": args.details,
        "trace_id": args.trace_id,
        "signal_id": args.signal_id,
        "timestamp": args.timestamp,
    }
    return validate(obj, "invalid signal", max_bytes, FLAG_OF_FIELD)


# --- sending ----------------------------------------------------------------------------------


async def send(settings: Settings, signals: Sequence[PendingSignal]) -> int:
    """Send every signal and wait until the broker has them all; the number sent."""
    from streams.sdk import InvalidSignal, SignalPublisher

    names = TopicNames(settings.topic_prefix)
    used = {s.dimension for s in signals}
    # Checked first: a producer waits a long time for a topic that does not exist, and a broker
    # that creates topics on use would create it with the wrong partition count.
    topics = [t for t, d in zip(names.signals, DIMENSIONS, strict=True) if d in used]
    await require_topics(settings, topics)
    handed = 0
    try:
        async with SignalPublisher.from_settings(settings) as publisher:
            for s in signals:
                try:
                    await publisher.record_signal(
                        s.agent_did,
                        s.dimension,
                        s.value,
                        s.source,
                        details=s.details,
                        trace_id=s.trace_id,
                        signal_id=s.signal_id,
                        timestamp=s.timestamp,
                    )
                except InvalidSignal as exc:  # validated already; only if the SDK grew a rule
                    raise UserError(f"{s.where}: {exc}") from exc
                handed += 1
            await publisher.flush()
    except KafkaError as exc:
        problem = kafka_error_message(settings, exc)
        if handed:
            problem += (
                f"; {handed} of {len(signals)} signals were handed to the producer before the "
                "failure and may or may not have been written"
            )
        raise UserError(problem) from exc
    return handed


def command(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    quiet_client_logs(settings)
    if args.stdin:
        given = [
            "--" + name.replace("_", "-")
            for name in _SIGNAL_FLAGS
            if getattr(args, name) is not None
        ]
        if given:
            raise UserError(
                f"--stdin reads whole signals from stdin; drop {', '.join(given)} "
                "(put those fields in each JSON line)"
            )
        signals = read_stdin(sys.stdin.buffer, settings.max_message_bytes)
    else:
        signals = [signal_from_flags(args, settings.max_message_bytes)]
    count = run_async(settings, send(settings, signals)) if signals else 0
    print(f"published {count} signal{'' if count == 1 else 's'}")
    return 0
