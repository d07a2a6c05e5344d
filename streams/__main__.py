"""Command line: ``python -m streams <command>`` (also installed as ``trust-streams``).

Only parsing and dispatch live here; the commands' work is in :mod:`streams.console`.
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from streams.errors import TrustServiceError
from streams.scoring.model import DIMENSIONS

PROG = "trust-streams"
WATCH_STREAMS = ("scores", "revocations", "deadletter")
#: Each command's work, imported only once the arguments parse (so --help and usage errors
#: answer at once): command -> (module, function taking the parsed arguments).
COMMANDS = {
    "worker": ("streams.console", "command_worker"),
    "topics": ("streams.console", "command_topics"),
    "publish": ("streams.console.publish", "command"),
    "watch": ("streams.console.watch", "command"),
    "schemas": ("streams.console", "command_schemas"),
    "demo": ("streams.console", "command_demo"),
    "config": ("streams.console.config", "command"),
    "reinstate": ("streams.console.reinstate", "command"),
    "explain": ("streams.console.explain", "command"),
}
SETTINGS_EPILOG = (
    "Settings come from TRUST_* environment variables (see README.md); --bootstrap-servers and "
    "--topic-prefix, where offered, override them. Exit status 2: a mistake to fix (bad flags or "
    "input, invalid settings, no broker, a topic layout that cannot work), told in one line."
)


class Parser(argparse.ArgumentParser):
    """Usage mistakes are one line, ``trust-streams: error: ...``, exit status 2."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix(PROG).strip()
        hint = f"{PROG} {command} --help" if command else f"{PROG} --help"
        self.exit(2, f"{PROG}: error: {message} (see '{hint}')\n")


def _number(kind: type[int] | type[float], minimum: float, strict: bool) -> Callable[[str], float]:
    bound = f"greater than {minimum:g}" if strict else f"at least {minimum:g}"
    noun = "an integer" if kind is int else "a number"

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
        if not math.isfinite(value) or value < minimum or (strict and value == minimum):
            raise argparse.ArgumentTypeError(f"{text!r} must be {bound}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _connection_options() -> Parser:
    common = Parser(add_help=False)
    group = common.add_argument_group("connection (override the environment)")
    group.add_argument(
        "--bootstrap-servers",
        metavar="HOST:PORT[,...]",
        help="Kafka brokers (default: TRUST_KAFKA_BOOTSTRAP_SERVERS, else 127.0.0.1:19092)",
    )
    group.add_argument(
        "--topic-prefix",
        metavar="PREFIX",
        help="prefix of every topic name (default: TRUST_TOPIC_PREFIX, else 'agentmesh.')",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG,
        description="Trust-score stream processor: per-agent trust scores from Kafka signals.",
        epilog=SETTINGS_EPILOG,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    conn = _connection_options()
    raw = argparse.RawDescriptionHelpFormatter

    sub.add_parser(
        "worker",
        help="run a scoring worker until SIGTERM or Ctrl-C",
        description="Run a scoring worker until SIGTERM or Ctrl-C. It creates missing topics and "
        "refuses to start when existing ones disagree in partition count. Configured entirely by "
        "TRUST_* environment variables, the way it is deployed.",
        epilog=SETTINGS_EPILOG,
    )

    topics = sub.add_parser(
        "topics",
        parents=[conn],
        help="create missing topics and show their partition counts",
        description="Create the service's missing topics (TRUST_PARTITIONS partitions each) and "
        "list every topic with its partition count. With --check nothing is created: exit 2, "
        "naming the problem, when a topic is missing or the partition counts disagree.",
        epilog=SETTINGS_EPILOG,
    )
    topics.add_argument(
        "--check", action="store_true", help="only check that every topic exists and fits"
    )

    pub = sub.add_parser(
        "publish",
        parents=[conn],
        formatter_class=raw,
        help="publish signals, from flags or as JSON lines from stdin",
        description="Publish one signal given by flags, or with --stdin many signals as JSON "
        "lines.\n\nEach line is a JSON object with agent_did, dimension, value and source, and "
        "optionally details,\ntrace_id, signal_id, timestamp (blank lines are skipped). The whole "
        "input is read and validated\nfirst; if any line is invalid nothing is sent and the "
        "error names the line. Prints\n'published N signals' when the broker has them all.",
        epilog="examples:\n"
        f"  {PROG} publish --agent did:mesh:agent-42 --dimension security_posture --value 0.2\n"
        '  echo \'{"agent_did": "did:mesh:a1", "dimension": "output_quality", "value": 0.9, '
        '"source": "qa"}\' \\\n'
        f"    | {PROG} publish --stdin\n\n" + SETTINGS_EPILOG,
    )
    pub.add_argument("--stdin", action="store_true", help="read JSON lines from stdin instead")
    one = pub.add_argument_group("one signal from flags")
    one.add_argument("--agent", metavar="DID", help="the agent's DID, e.g. did:mesh:agent-42")
    one.add_argument(
        "--dimension", choices=[d.value for d in DIMENSIONS], help="which dimension of trust"
    )
    one.add_argument("--value", type=_finite, metavar="0..1", help="0.0 bad … 1.0 good")
    one.add_argument("--source", help="who judged the action (default: cli)")
    one.add_argument("--details", help="free text, up to 8192 characters")
    one.add_argument("--trace-id", help="trace id to correlate the signal with")
    one.add_argument("--signal-id", help="the signal's id, for deduplication downstream")
    one.add_argument(
        "--timestamp",
        metavar="ISO",
        help="when the action was judged, ISO 8601 with a zone, e.g. 2026-11-24T05:57:31Z "
        "(default: the record's time)",
    )

    wat = sub.add_parser(
        "watch",
        parents=[conn],
        help="follow score updates, revocations or dead letters",
        description="Follow a topic from now (or replay it with --from-beginning). In a terminal: "
        "scores as a live table with the latest update of every agent (lowest score first), "
        "revocations and dead letters as a scrolling list. With --json, or when stdout is not a "
        "terminal: one message per line, exactly as received. Exit 0 when --max-messages is "
        "reached or on Ctrl-C; exit 1 when --timeout passes first.",
        epilog=SETTINGS_EPILOG,
    )
    wat.add_argument("stream", choices=WATCH_STREAMS, help="which topic to follow")
    wat.add_argument(
        "--from-beginning", action="store_true", help="replay the topic from its oldest record"
    )
    wat.add_argument(
        "--json", action="store_true", help="JSON lines even on a terminal (default otherwise)"
    )
    wat.add_argument(
        "--max-messages",
        type=_number(int, 1, strict=False),
        metavar="N",
        help="stop with exit 0 after N messages",
    )
    wat.add_argument(
        "--timeout",
        type=_number(float, 0, strict=True),
        metavar="S",
        help="stop with exit 1 after S seconds (unless --max-messages was reached first)",
    )

    cfg = sub.add_parser(
        "config",
        parents=[conn],
        help="show or change the scoring configuration in force",
        description="'config get' prints the configuration every worker uses (weights, thresholds "
        "and its version). 'config set' validates a new one (each weight in [0, 1], summing to 1 "
        "within 0.001; thresholds in 0..1000, revocation <= warning) and publishes it; workers "
        "apply it within seconds, and score updates and revocations name its version. An invalid "
        "one is rejected whole, naming every problem, and nothing changes. Options left out keep "
        "their current values.",
        epilog=SETTINGS_EPILOG,
    )
    cfg.add_argument("action", choices=("get", "set"))
    cfg.add_argument(
        "--weights",
        metavar="W1,W2,W3,W4,W5",
        help="five weights in the order " + ", ".join(d.value for d in DIMENSIONS),
    )
    cfg.add_argument("--revocation-threshold", type=int, metavar="N")
    cfg.add_argument(
        "--floor",
        action="append",
        metavar="DIMENSION=FLOOR[:MIN_SIGNALS]",
        help="revoke an agent whose score in DIMENSION (0..100) falls below FLOOR once it has "
        "MIN_SIGNALS signals there (default 1), whatever its total; DIMENSION=none removes it. "
        "Repeatable. Off by default, so default scores keep to the reference model.",
    )
    cfg.add_argument("--clear-floors", action="store_true", help="remove every floor first")
    cfg.add_argument("--warning-threshold", type=int, metavar="N")

    exp = sub.add_parser(
        "explain",
        help="why an agent has the score it has",
        description="Ask a worker's HTTP API (any worker: it forwards to the agent's owner) for "
        "the agent's explanation: per-dimension score, weight, points of the total, signal counts, "
        "the last signals, trend and revocation. Exit 1 for an unknown agent.",
        epilog=SETTINGS_EPILOG,
    )
    exp.add_argument("--agent", required=True, metavar="DID")
    exp.add_argument(
        "--url", help="a worker's base URL (default: http://TRUST_WEB_HOST:TRUST_WEB_PORT)"
    )
    exp.add_argument("--json", action="store_true", help="the raw JSON answer")

    rein = sub.add_parser(
        "reinstate",
        parents=[conn],
        help="lift a revoked agent's revocation, with an audit record",
        description="Lift an agent's revocation. The worker that owns the agent clears 'revoked' "
        "and publishes an audit event (type 'reinstated') on the revocation topic, which this "
        "command waits for and prints. A later fall below the threshold revokes the agent again. "
        "Exit 1 when no reinstatement follows within --timeout (the agent is unknown or not "
        "revoked, or no worker runs).",
        epilog=SETTINGS_EPILOG,
    )
    rein.add_argument("--agent", required=True, metavar="DID", help="the revoked agent's DID")
    rein.add_argument("--reason", required=True, help="why, for the audit record")
    rein.add_argument("--by", help="who asks (default: the current user)")
    rein.add_argument(
        "--timeout",
        type=_number(float, 0, strict=True),
        default=15.0,
        metavar="S",
        help="how long to wait for the audit record (default: 15)",
    )

    schemas = sub.add_parser(
        "schemas",
        help="write the JSON Schemas of every message",
        description="Write the JSON Schema of every message of the wire contract, generated from "
        "the models in streams/messages.py.",
    )
    schemas.add_argument("--out", default="schemas", help="output folder (default: schemas)")

    demo = sub.add_parser(
        "demo",
        help="run a demonstration fleet of agents",
        description="Run a demonstration: a fleet of simulated agents publishing signals, and "
        "their scores as they change.",
        epilog=SETTINGS_EPILOG,
    )
    demo.add_argument(
        "--agents",
        type=_number(int, 1, strict=False),
        default=30,
        metavar="N",
        help="how many simulated agents (default: 30)",
    )
    demo.add_argument(
        "--window-seconds",
        type=_number(float, 0, strict=True),
        default=10.0,
        metavar="S",
        help="score window length for the demo (default: 10)",
    )
    demo.add_argument(
        "--fleet-only",
        action="store_true",
        help="start no broker and no worker: publish the fleet's signals to the broker and topics "
        "of TRUST_KAFKA_BOOTSTRAP_SERVERS and TRUST_TOPIC_PREFIX, and show the scores the workers "
        "there publish (their window length applies, not --window-seconds)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module, function = COMMANDS[args.command]
    try:
        from streams.console import UserError

        command: Callable[[argparse.Namespace], int] = getattr(
            importlib.import_module(module), function
        )
        return int(command(args))
    except (UserError, TrustServiceError) as exc:
        from streams.console.safe_text import safe

        # An error's text can quote what came from the wire (a worker's answer, a record).
        print(f"{PROG}: error: {safe(exc, keep_newlines=True)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
