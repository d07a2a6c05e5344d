"""The terminal views of ``trust-streams watch``: a table of the latest score of every agent,
redrawn in place, and a scrolling list of revocations or dead letters; plain ANSI escape codes.

Every value shown comes from the wire and may hold escape sequences of its own: each goes
through :func:`streams.console.safe_text.safe` before it is laid out and coloured."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

import orjson

from streams.console.safe_text import safe
from streams.errors import TrustServiceError

_RESET, _BOLD, _DIM, _RED, _YELLOW = (
    "\x1b[0m",
    "\x1b[1m",
    "\x1b[2m",
    "\x1b[31m",
    "\x1b[33m",
)
_HIDE_CURSOR, _SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"


@dataclass(frozen=True, slots=True)
class Received:
    """One record as read from the topic."""

    topic: str
    partition: int
    offset: int
    value: bytes | None


class OutputClosed(TrustServiceError):
    """Whoever read our output went away (e.g. ``| head``): stop quietly."""


def _object(value: bytes | None) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def _clock(iso: object) -> str:
    """HH:MM:SS of an ISO 8601 time, or the text itself (made safe) when it is not one."""
    try:
        return datetime.fromisoformat(str(iso)).strftime("%H:%M:%S")
    except ValueError:
        return safe(iso)


def _field(message: dict[str, Any], name: str, default: str = "?") -> str:
    """A field of a message as text safe to print."""
    return safe(message.get(name, default))


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


class _Terminal:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.color = "NO_COLOR" not in os.environ

    def paint(self, text: str, *styles: str) -> str:
        return f"{''.join(styles)}{text}{_RESET}" if self.color and styles else text

    def write(self, text: str) -> None:
        try:
            self.out.write(text)
            self.out.flush()
        except BrokenPipeError as exc:
            raise OutputClosed from exc


class ScoreTable(_Terminal):
    """The latest score update of every agent, lowest score first, redrawn in place."""

    COLUMNS = (
        ("SCORE", 5),
        ("CHANGE", 6),
        ("TIER", 16),
        ("AT_RISK", 7),
        ("REVOKED", 7),
        ("WINDOW", 8),
    )
    REDRAW_EVERY = 0.25

    def __init__(
        self, out: TextIO, size: Callable[[], os.terminal_size] = shutil.get_terminal_size
    ):
        super().__init__(out)
        self.size = size
        self.rows: dict[str, dict[str, Any]] = {}
        self.received = 0
        self.skipped = 0
        self.topic = ""
        self.where = ""
        self.drawn = 0
        self.dirty = True
        self.last_draw = 0.0

    def started(self, topic: str, partitions: int, from_beginning: bool) -> None:
        self.topic = topic
        self.where = "from the beginning" if from_beginning else "from now"
        self.write(_HIDE_CURSOR)
        self.draw()

    def add(self, records: Sequence[Received]) -> None:
        for record in records:
            self.received += 1
            update = _object(record.value)
            agent = None if update is None else update.get("agent_did")
            if isinstance(agent, str) and update is not None:
                self.rows[agent] = update
            else:
                self.skipped += 1
        self.dirty = True
        self.tick()

    def tick(self) -> None:
        if self.dirty and time.monotonic() - self.last_draw >= self.REDRAW_EVERY:
            self.draw()

    def close(self) -> None:
        with contextlib.suppress(OutputClosed):
            if self.topic:
                self.draw()
            self.write(_SHOW_CURSOR)

    def lines(self) -> list[str]:
        width, height = self.size()
        width = max(40, width - 1)
        fixed = sum(w + 1 for _, w in self.COLUMNS)
        shown = {agent: safe(agent) for agent in self.rows}
        agent_width = max(12, min(max(map(len, shown.values()), default=5), width - fixed))
        skipped = f", {self.skipped} skipped (not score updates)" if self.skipped else ""
        header = (
            f"{safe(self.topic)} {self.where}: {len(self.rows)} agents, {self.received} updates"
            f"{skipped} at {time.strftime('%H:%M:%S')}"
        )
        columns = "AGENT".ljust(agent_width) + "".join(
            " " + name.rjust(w) if i < 2 else " " + name.ljust(w)
            for i, (name, w) in enumerate(self.COLUMNS)
        )
        out = [self.paint(_fit(header, width), _BOLD), self.paint(_fit(columns, width), _DIM)]
        room = max(1, height - 4)
        ordered = sorted(self.rows.items(), key=lambda kv: (_int(kv[1].get("total_score")), kv[0]))
        out.extend(
            self._row(shown[agent], update, agent_width, width) for agent, update in ordered[:room]
        )
        more = f"{len(ordered) - room} more agents not shown; " if len(ordered) > room else ""
        out.append(self.paint(_fit(f"{more}lowest score first; Ctrl-C to stop", width), _DIM))
        return out

    def _row(self, agent: str, update: dict[str, Any], agent_width: int, width: int) -> str:
        change = update.get("score_change")
        cells = (
            _field(update, "total_score").rjust(5),
            (f"{change:+d}" if isinstance(change, int) else "?").rjust(6),
            _field(update, "tier").ljust(16),
            ("yes" if update.get("at_risk") else "").ljust(7),
            ("yes" if update.get("revoked") else "").ljust(7),
            _clock(update.get("window_start")).ljust(8),
        )
        text = _fit(
            _fit(agent, agent_width).ljust(agent_width) + "".join(" " + c for c in cells), width
        )
        if update.get("revoked"):
            return self.paint(text, _RED)
        if update.get("at_risk"):
            return self.paint(text, _YELLOW)
        return text

    def draw(self) -> None:
        lines = self.lines()
        parts = [f"\x1b[{self.drawn}F"] if self.drawn else []
        parts.extend(f"\x1b[2K{line}\n" for line in lines)
        parts.append("\x1b[J")
        self.write("".join(parts))
        self.drawn = len(lines)
        self.dirty = False
        self.last_draw = time.monotonic()


def _int(value: object) -> int:
    return value if isinstance(value, int) else 10**6


class EventList(_Terminal):
    """Revocations or dead letters, one line each, as they arrive."""

    def __init__(self, out: TextIO, stream: str) -> None:
        super().__init__(out)
        self.stream = stream

    def started(self, topic: str, partitions: int, from_beginning: bool) -> None:
        where = "from the beginning" if from_beginning else "from now"
        self.write(self.paint(f"watching {topic} {where} (Ctrl-C to stop)", _DIM) + "\n")

    def add(self, records: Sequence[Received]) -> None:
        self.write("".join(self.line(record) + "\n" for record in records))

    def line(self, record: Received) -> str:
        message = _object(record.value)
        if message is None:
            shown = repr(record.value[:80]) if record.value is not None else "an empty record"
            return self.paint(
                f"{safe(record.topic)}[{record.partition}]@{record.offset}: not JSON: "
                f"{safe(shown)}",
                _DIM,
            )
        if self.stream == "revocations":
            return self.revocation(message)
        return self.dead_letter(message)

    def revocation(self, m: dict[str, Any]) -> str:
        trigger = m.get("trigger")
        if isinstance(trigger, dict) and trigger.get("kind") == "signal":
            cause = (
                f"signal {_field(trigger, 'topic', '')}[{_field(trigger, 'partition', '')}]"
                f"@{_field(trigger, 'offset', '')}"
            )
            if trigger.get("signal_id"):
                cause += f" id={_field(trigger, 'signal_id')}"
        elif isinstance(trigger, dict):
            cause = (
                f"window {_clock(trigger.get('window_start'))}-{_clock(trigger.get('window_end'))}"
            )
        else:
            cause = "?"
        return (
            f"{_field(m, 'revoked_at')}  {self.paint(_field(m, 'agent_did'), _RED, _BOLD)}  "
            f"score {_field(m, 'total_score')} < {_field(m, 'threshold')}  trigger: {cause}  "
            f"id={_field(m, 'revocation_id')}"
        )

    def dead_letter(self, m: dict[str, Any]) -> str:
        key = m.get("key")
        return (
            f"{_field(m, 'received_at')}  {_field(m, 'topic')}[{_field(m, 'partition')}]"
            f"@{_field(m, 'offset')}  {self.paint(_field(m, 'error_kind'), _YELLOW)}: "
            f"{_field(m, 'error', '')}" + (f"  key={safe(repr(key))}" if key is not None else "")
        )

    def tick(self) -> None:
        pass

    def close(self) -> None:
        pass


# --- following the topic ----------------------------------------------------------------------
