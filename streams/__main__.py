"""Command line: ``python -m streams <command>`` (also installed as ``trust-streams``)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from aiokafka.errors import KafkaConnectionError
from pydantic import ValidationError

from .errors import TrustServiceError
from .settings import Settings

log = logging.getLogger("streams")


class UserError(Exception):
    """A mistake the user can fix; printed as one line, exit status 2."""


def _load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"TRUST_{'_'.join(str(p) for p in err['loc']).upper() or '?'}: {err['msg']}"
            for err in exc.errors(include_url=False)
        )
        raise UserError(f"invalid settings: {problems}") from exc


def _ensure_topics_or_fail(settings: Settings, loop: asyncio.AbstractEventLoop) -> None:
    from .topicadmin import ensure_topics

    try:
        report = loop.run_until_complete(ensure_topics(settings))
    except KafkaConnectionError as exc:
        raise UserError(
            f"no Kafka broker answered at {settings.kafka_bootstrap_servers} ({exc}); start one "
            "with 'deploy/local/kafka start' or set TRUST_KAFKA_BOOTSTRAP_SERVERS"
        ) from exc
    if report.created:
        log.info("Created %d topics", len(report.created))


def cmd_worker(args: argparse.Namespace) -> NoReturn:
    import faust

    from .app import create_app

    settings = _load_settings()
    logging.basicConfig(
        level=settings.log_level, format="[%(asctime)s] %(levelname)s %(name)s: %(message)s"
    )
    log.info("Starting worker with settings %s", settings.masked())
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    _ensure_topics_or_fail(settings, loop)
    trust = create_app(settings)
    worker = faust.Worker(trust.app, loop=loop, loglevel=settings.log_level, quiet=True)
    worker.execute_from_commandline()  # runs until stopped, then exits the process


def cmd_topics(args: argparse.Namespace) -> int:
    from .topicadmin import ensure_topics

    settings = _load_settings()
    try:
        report = asyncio.run(ensure_topics(settings, create=not args.check))
    except KafkaConnectionError as exc:
        raise UserError(f"no Kafka broker answered at {settings.kafka_bootstrap_servers}") from exc
    for topic, count in sorted(report.existing.items()):
        marker = " (created)" if topic in report.created else ""
        print(f"{topic}\t{count} partitions{marker}")
    return 0


def cmd_schemas(args: argparse.Namespace) -> int:
    from .messages import json_schema, message_models

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for stem, model in message_models().items():
        path = out / f"{stem}.schema.json"
        path.write_text(json.dumps(json_schema(model), indent=2, sort_keys=True) + "\n")
        print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trust-streams",
        description="Trust-score stream processor. Settings: TRUST_* environment variables.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    worker = sub.add_parser("worker", help="run a scoring worker until SIGTERM or Ctrl-C")
    worker.set_defaults(func=cmd_worker)

    topics = sub.add_parser("topics", help="create missing topics and show their partition counts")
    topics.add_argument("--check", action="store_true", help="only check, create nothing")
    topics.set_defaults(func=cmd_topics)

    schemas = sub.add_parser("schemas", help="write the JSON Schemas of every message")
    schemas.add_argument("--out", default="schemas", help="output folder (default: schemas)")
    schemas.set_defaults(func=cmd_schemas)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (UserError, TrustServiceError) as exc:
        print(f"trust-streams: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
