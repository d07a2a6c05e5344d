"""Text from the wire printed on a terminal: no escape sequence gets through, nothing is hidden."""

from __future__ import annotations

import io
import re
import sys

import orjson
import pytest

from streams.console.explain import _render
from streams.console.safe_text import safe, safe_bytes
from streams.console.views import EventList, Received, ScoreTable
from streams.console.watch import JsonLines

HOSTILE = [
    "\x1b[31mred\x1b[0m",
    "\x1b]0;new window title\x07",
    "\x1b]8;;http://evil/\x1b\\link\x1b]8;;\x1b\\",
    "\x1bP+q544e\x1b\\",
    "\x9b2J",
    "\x1b[2J\x1b[H",
    "\x1b[1A\x1b[2Kover",
    "\x1bc",
    "\x1b[",
    "a\rb",
    "a\nb",
    "\x07\x08\x7f",
    "\u202eevil\u202c",
    "x\u2028y",
]
# Whatever a terminal would act on: ESC, C1 controls, carriage return, line feed, BEL, backspace,
# DEL, bidirectional overrides, line separators.
ACTIONABLE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def test_plain_text_is_unchanged() -> None:
    for text in ("did:mesh:agent-7", "policy_engine v2 (eu-west)", "ünïcödé ✓", "tab\tkept"):
        assert safe(text) == text


def test_nothing_a_terminal_acts_on_gets_through() -> None:
    for text in HOSTILE:
        shown = safe(text)
        assert not ACTIONABLE.search(shown), (text, shown)


def test_what_is_removed_or_escaped_stays_visible() -> None:
    assert safe("\x1b[31mred\x1b[0m") == "red"
    assert safe("\x1b]0;title\x07rest") == "rest"
    assert safe("a\rb") == "a\\x0db"
    assert safe("a\nb") == "a\\x0ab" and safe("a\nb", keep_newlines=True) == "a\nb"
    assert safe("\u202eevil") == "\\u202eevil"
    assert safe(None) == "None" and safe(42) == "42"
    assert safe_bytes(b"ok \xff\x1b[2J") == "ok \\xff"


def test_the_watch_views_show_hostile_records_harmlessly() -> None:
    revocation = {
        "agent_did": "did:m:\x1b[2Jx",
        "revoked_at": "\x1b]0;t\x07",
        "total_score": "\x1b[31m",
        "threshold": 300,
        "revocation_id": "\x9b1A",
        "trigger": {"kind": "signal", "topic": "\x1bc", "partition": 0, "offset": 1,
                    "signal_id": "\x1b[H"},
    }  # fmt: skip
    letter = {"topic": "\x1b[K", "error_kind": "\x1b[5m", "error": "bad\rgood", "key": "\x1b"}
    out = io.StringIO()
    events = EventList(out, "revocations")
    lines = [events.revocation(revocation), EventList(out, "deadletter").dead_letter(letter)]
    lines.append(events.line(Received("t", 0, 1, b"\x1b[2J not json")))
    for line in lines:
        # The views' own colours are the only escapes: strip them, then nothing may remain.
        assert not ACTIONABLE.search(re.sub(r"\x1b\[[0-9;]*m", "", line)), line
    table = ScoreTable(out, size=lambda: __import__("os").terminal_size((120, 40)))
    update = {"agent_did": "did:m:\x1b]0;x\x07a", "total_score": 1, "tier": "\x1b[8m"}
    table.add([Received("t", 0, 0, orjson.dumps(update))])
    for line in table.lines():
        assert not ACTIONABLE.search(re.sub(r"\x1b\[[0-9;]*m", "", line)), line


def test_json_lines_on_a_terminal_are_made_safe_and_in_a_pipe_kept_as_received() -> None:
    record = [Received("t", 0, 0, b'{"source": "x"}\x1b[2J')]
    piped = io.BytesIO()
    JsonLines(piped).add(record)
    assert piped.getvalue() == b'{"source": "x"}\x1b[2J\n'
    terminal = io.BytesIO()
    JsonLines(terminal, terminal=True).add(record)
    assert terminal.getvalue() == b'{"source": "x"}\n'


def test_an_explanation_prints_sources_and_reasons_harmlessly() -> None:
    explanation = {
        "agent_did": "did:m:\x1b[2J",
        "total_score": 200,
        "tier": "untrusted",
        "at_risk": False,
        "revoked": True,
        "trend": "degrading",
        "config_version": 0,
        "dimensions": {
            "security_posture": {
                "score": 0.0,
                "weight": 0.25,
                "contribution": 0.0,
                "signal_count": 1,
                "window_signal_count": 0,
            }
        },
        "revocation": {"revoked_at": "2026-01-01T00:00:00Z", "reason": "\x1b]0;pwned\x07score"},
        "recent_signals": [
            {
                "timestamp": "2026-01-01T00:00:00Z",
                "dimension": "security_posture",
                "value": 0.0,
                "source": "ids\x1b[1A\x1b[2Kall good",
            }
        ],
    }
    text = _render(explanation)
    assert not ACTIONABLE.search(text.replace("\n", "")), text
    assert "idsall good" in text and "score" in text


def test_the_command_line_prints_an_error_s_text_from_the_wire_escaped(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import streams.__main__ as cli
    from streams.console import UserError

    def failing(args: object) -> int:
        raise UserError("the worker answered: \x1b]0;owned\x07\x1b[31mrevoked\x1b[0m")

    monkeypatch.setitem(cli.COMMANDS, "topics", ("tests.unit.test_safe_text", "_failing"))
    monkeypatch.setattr(sys.modules[__name__], "_failing", failing, raising=False)
    assert cli.main(["topics"]) == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err
    assert "the worker answered: revoked" in err
