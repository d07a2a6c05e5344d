"""The command line without a broker: parsing, validation, help, and the one-line errors.

Most cases run ``python -m streams`` as a subprocess, the way users run it, with the bootstrap
servers pointing at a port nothing listens on (127.0.0.1:1): a command that must not touch the
broker fails the test if it tries (the error would name the broker instead of the mistake).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Sequence

import orjson
import pytest

from streams.__main__ import build_parser, main
from streams.console import UserError
from streams.console.publish import signals_from_lines
from streams.console.views import Received, ScoreTable
from streams.console.watch import JsonLines
from tests.support.broker import REPO_ROOT

NO_BROKER = "127.0.0.1:1"
VALID = ["--agent", "did:mesh:agent-42", "--dimension", "security_posture", "--value", "0.2"]


def run_cli(*args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TRUST_")}
    environment.update({"TRUST_KAFKA_BOOTSTRAP_SERVERS": NO_BROKER, **env})
    return subprocess.run(
        [sys.executable, "-m", "streams", *args],
        cwd=REPO_ROOT,
        env=environment,
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """Exit 2, nothing on stdout, one line on stderr starting 'trust-streams: error:'."""
    shown = f"exit {result.returncode}\nstdout: {result.stdout!r}\nstderr: {result.stderr!r}"
    assert result.returncode == 2, shown
    assert "Traceback" not in result.stderr, shown
    assert result.stdout == "", shown
    lines = result.stderr.splitlines()
    assert len(lines) == 1, shown
    line = lines[0]
    assert line.startswith("trust-streams: error: "), shown
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    return line


def lines(*objects: object) -> str:
    return "".join(orjson.dumps(o).decode() + "\n" for o in objects)


def signal(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "agent_did": "did:mesh:agent-1",
        "dimension": "output_quality",
        "value": 0.5,
        "source": "qa",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


# --- publish: invalid input, never sent --------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--agent", "agent-42", *VALID[2:]], ("--agent", "'agent-42' is not a DID")),
        (["--agent", "did:mesh:", *VALID[2:]], ("--agent", "is not a DID")),
        ([*VALID[:4], "--value", "1.5"], ("--value", "1.5")),
        ([*VALID[:4], "--value", "-0.1"], ("--value", "-0.1")),
        ([*VALID[:4], "--value", "abc"], ("--value", "'abc' is not a number")),
        ([*VALID[:4], "--value", "nan"], ("--value", "not a finite number")),
        ([*VALID[:2], "--dimension", "security", "--value", "0.2"], ("--dimension", "security")),
        (VALID[2:], ("--agent",)),
        (VALID[:4], ("--value",)),
        ([*VALID, "--source", "  "], ("--source", "blank")),
        ([*VALID, "--timestamp", "2026-11-24T05:57:31"], ("--timestamp", "zone")),
        ([*VALID, "--timestamp", "yesterday"], ("--timestamp", "ISO 8601")),
        ([*VALID, "--details", "x" * 9000], ("--details",)),
        ([*VALID, "--bogus"], ("unrecognized arguments: --bogus",)),
    ],
    ids=[
        "did-no-prefix",
        "did-empty-id",
        "value-above-1",
        "value-below-0",
        "value-not-number",
        "value-nan",
        "unknown-dimension",
        "missing-agent",
        "missing-value",
        "blank-source",
        "naive-timestamp",
        "bad-timestamp",
        "details-too-long",
        "unknown-flag",
    ],
)
def test_publish_rejects_invalid_flags(args: list[str], fragments: tuple[str, ...]) -> None:
    assert_one_line_error(run_cli("publish", *args), *fragments)


def test_publish_rejects_signal_over_the_size_limit() -> None:
    result = run_cli("publish", *VALID, "--details", "x" * 2000, TRUST_MAX_MESSAGE_BYTES="1024")
    assert_one_line_error(result, "over the worker's limit of 1024")


@pytest.mark.parametrize(
    ("stdin", "fragments"),
    [
        (lines(signal(), signal(agent_did="nope")), ("line 2", "agent_did", "'nope'")),
        (lines(signal(), signal(dimension=None)), ("line 2", "dimension is required")),
        (lines(signal(dimension="vibes")), ("line 1", "'vibes' is not one of")),
        (lines(signal(value=2)), ("line 1", "value")),
        (lines(signal(value=True)), ("line 1", "value", "bool")),
        (lines(signal(value="0.5")), ("line 1", "value")),
        (lines(signal(source=None)), ("line 1", "source is required")),
        (lines(signal(vlaue=0.1)), ("line 1", "unknown field 'vlaue'")),
        (lines(signal(timestamp="2026-11-24 05:57")), ("line 1", "timestamp", "zone")),
        (lines(signal()) + "\n" + "{not json\n", ("line 3", "not valid JSON")),
        (lines(signal(), [1, 2]), ("line 2", "expected a JSON object")),
    ],
    ids=[
        "bad-did",
        "no-dimension",
        "unknown-dimension",
        "value-above-1",
        "value-bool",
        "value-string",
        "no-source",
        "unknown-field",
        "naive-timestamp",
        "not-json-after-blank-line",
        "not-an-object",
    ],
)
def test_publish_stdin_rejects_the_batch_naming_the_line(
    stdin: str, fragments: tuple[str, ...]
) -> None:
    assert_one_line_error(run_cli("publish", "--stdin", stdin=stdin), *fragments)


def test_publish_stdin_refuses_signal_flags() -> None:
    result = run_cli("publish", "--stdin", "--agent", "did:mesh:a", stdin=lines(signal()))
    assert_one_line_error(result, "--stdin", "--agent")


def test_publish_stdin_with_nothing_sends_nothing() -> None:
    result = run_cli("publish", "--stdin", stdin="\n\n")
    assert (result.returncode, result.stdout, result.stderr) == (0, "published 0 signals\n", "")


def test_stdin_lines_are_all_validated_before_any_is_returned() -> None:
    good = orjson.dumps(signal())
    with pytest.raises(UserError, match=r"^line 4: "):
        signals_from_lines([good, b"", good, orjson.dumps(signal(value=7))], max_bytes=65536)
    parsed = signals_from_lines([good, b"  \n", good], max_bytes=65536)
    assert [p.where for p in parsed] == ["line 1", "line 3"]


# --- no broker ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["publish", *VALID],
        ["watch", "scores", "--json", "--timeout", "30"],
        ["watch", "revocations"],
        ["topics"],
        ["topics", "--check"],
    ],
    ids=["publish", "watch-scores", "watch-revocations", "topics", "topics-check"],
)
def test_no_broker_is_one_line_and_exit_2(args: list[str]) -> None:
    assert_one_line_error(run_cli(*args), f"no Kafka broker answered at {NO_BROKER}")


def test_bootstrap_flag_overrides_the_environment() -> None:
    result = run_cli("topics", "--check", "--bootstrap-servers", "127.0.0.1:2")
    assert_one_line_error(result, "no Kafka broker answered at 127.0.0.1:2")


# --- settings and usage mistakes ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "fragments"),
    [
        (["topics"], {"TRUST_PARTITIONS": "0"}, ("invalid settings", "TRUST_PARTITIONS")),
        (["topics"], {"TRUST_PARTITIONS": "many"}, ("TRUST_PARTITIONS",)),
        (["publish", *VALID], {"TRUST_WEIGHT_OUTPUT_QUALITY": "0.9"}, ("weights must sum",)),
        (["topics", "--topic-prefix", "bad prefix/"], {}, ("--topic-prefix", "invalid topic")),
        (["watch", "scores"], {"TRUST_TOPIC_PREFIX": "a b"}, ("TRUST_TOPIC_PREFIX",)),
        (["topics", "--bootstrap-servers", " "], {}, ("--bootstrap-servers", "empty")),
        (["watch", "votes"], {}, ("invalid choice: 'votes'",)),
        (["watch", "scores", "--timeout", "0"], {}, ("--timeout", "greater than 0")),
        (["watch", "scores", "--timeout", "soon"], {}, ("--timeout", "not a number")),
        (["watch", "scores", "--max-messages", "0"], {}, ("--max-messages", "at least 1")),
        (["watch", "scores", "--max-messages", "2.5"], {}, ("--max-messages", "integer")),
        (["demo", "--agents", "0"], {}, ("--agents", "at least 1")),
        (["demo", "--window-seconds", "-1"], {}, ("--window-seconds", "greater than 0")),
        (["launch"], {}, ("invalid choice: 'launch'",)),
        ([], {}, ("required: COMMAND",)),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_mistakes_are_one_line_and_exit_2(
    args: list[str], env: dict[str, str], fragments: tuple[str, ...]
) -> None:
    assert_one_line_error(run_cli(*args, **env), *fragments)


# --- help --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "options"),
    [
        ([], ("worker", "topics", "publish", "watch", "schemas", "demo", "TRUST_")),
        (["worker"], ("TRUST_",)),
        (["topics"], ("--check", "--bootstrap-servers", "--topic-prefix")),
        (
            ["publish"],
            (
                "--stdin",
                "--agent",
                "--dimension",
                "--value",
                "--source",
                "--details",
                "--signal-id",
                "--timestamp",
                "--bootstrap-servers",
                "--topic-prefix",
                "nothing is sent",
            ),
        ),
        (
            ["watch"],
            (
                "scores",
                "revocations",
                "deadletter",
                "--from-beginning",
                "--json",
                "--max-messages",
                "--timeout",
                "--bootstrap-servers",
            ),
        ),
        (["schemas"], ("--out",)),
        (["demo"], ("--agents", "--window-seconds", "default: 30", "default: 10")),
    ],
    ids=lambda v: " ".join(v) or "top" if isinstance(v, list) else None,
)
def test_help_exits_0_and_names_the_options(command: list[str], options: Sequence[str]) -> None:
    result = run_cli(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    text = " ".join(result.stdout.split())  # argparse wraps lines
    for option in options:
        assert option in text, f"{option!r} not in the help of {command}:\n{result.stdout}"


# --- in process: defaults, the missing demo, the views ------------------------------------------


def test_defaults() -> None:
    parser = build_parser()
    demo = parser.parse_args(["demo"])
    assert (demo.agents, demo.window_seconds) == (30, 10.0)
    watch = parser.parse_args(["watch", "scores"])
    assert (watch.from_beginning, watch.json, watch.max_messages, watch.timeout) == (
        False,
        False,
        None,
        None,
    )
    assert (watch.bootstrap_servers, watch.topic_prefix) == (None, None)


def test_demo_missing_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "streams.demo", None)  # the import fails as if absent
    assert main(["demo"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("trust-streams: error: the demo is not available")


def test_json_lines_are_the_records_as_received() -> None:
    out = io.BytesIO()
    sink = JsonLines(out)
    compact = b'{"agent_did": "did:mesh:a", "total_score": 1}'
    sink.add(
        [
            Received("t", 0, 0, compact),
            Received("t", 0, 1, b'{\n  "a": 1\n}'),  # pretty-printed: compacted to one line
            Received("t", 0, 2, None),
        ]
    )
    assert out.getvalue().splitlines() == [compact, b'{"a":1}', b"null"]


def test_score_table_keeps_the_latest_row_per_agent_lowest_first() -> None:
    out = io.StringIO()
    table = ScoreTable(out, size=lambda: os.terminal_size((100, 30)))
    table.started("p.trust.scores", 3, from_beginning=True)

    def update(agent: str, score: int, **flags: bool) -> Received:
        body = {
            "agent_did": agent,
            "total_score": score,
            "score_change": score - 500,
            "tier": "standard",
            "at_risk": flags.get("at_risk", False),
            "revoked": flags.get("revoked", False),
            "window_start": "2026-11-24T05:57:30.000Z",
            "window_end": "2026-11-24T05:58:00.000Z",
        }
        return Received("p.trust.scores", 0, 0, orjson.dumps(body))

    table.add([update("did:mesh:b", 800), update("did:mesh:a", 600)])
    table.add([update("did:mesh:b", 250, at_risk=True, revoked=True), Received("t", 0, 9, b"[]")])
    rendered = table.lines()
    assert "2 agents, 4 updates, 1 skipped" in rendered[0]
    rows = rendered[2:4]
    assert "did:mesh:b" in rows[0] and " 250 " in rows[0] and "-250" in rows[0]
    assert "\x1b[31m" in rows[0]  # revoked: red
    assert "did:mesh:a" in rows[1] and " 600 " in rows[1] and "05:57:30" in rows[1]
    table.close()
    assert out.getvalue().endswith("\x1b[?25h")  # the cursor is shown again


def test_the_parser_offers_every_stream_watch_follows() -> None:
    from streams.__main__ import WATCH_STREAMS
    from streams.console.watch import STREAMS

    assert WATCH_STREAMS == STREAMS
