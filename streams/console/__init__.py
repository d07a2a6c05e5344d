"""The work behind the command line (``streams/__main__.py`` only parses and dispatches).

Every command reads the one :class:`~streams.settings.Settings` object (``TRUST_*`` environment
variables), with ``--bootstrap-servers`` and ``--topic-prefix`` overriding it where given. A mistake
the user can fix (bad input, invalid settings, no broker, a topic layout that cannot work) raises
:class:`UserError`, which the entry point prints as one line and turns into exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import inspect
import json
import logging
import re
from collections.abc import Awaitable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)

from streams.errors import InvalidSettings, TopicLayoutError, TrustServiceError
from streams.kafka.topics import TopicNames
from streams.logs import configure_logging
from streams.settings import Settings

log = logging.getLogger("streams")

T = TypeVar("T")

#: Kafka topic names: at most 249 characters from this set.
_TOPIC_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


class UserError(TrustServiceError):
    """A mistake the user can fix; printed as one line, exit status 2."""


# --- settings ---------------------------------------------------------------------------------

#: Command-line flags that override a setting: attribute of the parsed arguments -> setting.
_OVERRIDES = {"bootstrap_servers": "kafka_bootstrap_servers", "topic_prefix": "topic_prefix"}
_FLAG_OF_SETTING = {
    "kafka_bootstrap_servers": "--bootstrap-servers",
    "topic_prefix": "--topic-prefix",
}
#: Errors of a broker that refuses this principal something (Kafka ACLs), and on what.
_DENIED = {
    TopicAuthorizationFailedError: "topic",
    GroupAuthorizationFailedError: "consumer group",
    ClusterAuthorizationFailedError: "cluster",
    TransactionalIdAuthorizationFailed: "transactional id",
}


def load_settings(args: argparse.Namespace | None = None) -> Settings:
    """Settings from the environment, with the command's override flags applied."""
    overrides: dict[str, Any] = {}
    if args is not None:
        for attr, setting in _OVERRIDES.items():
            value = getattr(args, attr, None)
            if value is not None:
                overrides[setting] = value
    try:
        settings = Settings(**overrides)
    except InvalidSettings as exc:
        raise UserError(f"invalid settings: {_settings_problems(exc, overrides)}") from exc
    _check_names(settings, overrides)
    return settings


def _settings_problems(exc: InvalidSettings, overrides: dict[str, Any]) -> str:
    """Each problem named by its variable, or by the flag that gave the value."""
    flags = {f"TRUST_{field.upper()}": _FLAG_OF_SETTING[field] for field in overrides}
    return "; ".join(
        message if name is None else f"{flags.get(name, name)}: {message}"
        for name, message in exc.problems
    )


def _check_names(settings: Settings, overrides: dict[str, Any]) -> None:
    source = {
        key: _FLAG_OF_SETTING[key] if key in overrides else f"TRUST_{key.upper()}"
        for key in _FLAG_OF_SETTING
    }
    if not settings.kafka_bootstrap_servers.strip(" ,"):
        raise UserError(f"{source['kafka_bootstrap_servers']} is empty; give host:port[,...]")
    names = TopicNames(settings.topic_prefix)
    for topic in names.all:
        if not _TOPIC_NAME_RE.match(topic):
            raise UserError(
                f"{source['topic_prefix']}={settings.topic_prefix!r} makes the invalid topic "
                f"name {topic!r}: topic names are at most 249 of A-Z a-z 0-9 . _ -"
            )


def quiet_client_logs(settings: Settings) -> None:
    """The Kafka client logs a failed connection itself; a command reports it once, as one line.

    With TRUST_LOG_LEVEL=DEBUG everything is logged to stderr instead.
    """
    if settings.log_level.upper() == "DEBUG":
        configure_logging(logging.DEBUG)
    else:
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


# --- Kafka errors -----------------------------------------------------------------------------


def no_broker_message(settings: Settings) -> str:
    return (
        f"no Kafka broker answered at {settings.kafka_bootstrap_servers}; start one with "
        "'deploy/local/kafka start', or set TRUST_KAFKA_BOOTSTRAP_SERVERS or --bootstrap-servers"
    )


def kafka_error_message(settings: Settings, exc: KafkaError) -> str:
    if isinstance(exc, TrustServiceError):  # already says what is wrong (a TLS or SASL failure)
        return str(exc)
    denied = next((what for kind, what in _DENIED.items() if isinstance(exc, kind)), None)
    if denied is not None:
        who = settings.kafka_sasl_username or "this client"
        on = " ".join([denied, *map(str, exc.args)])
        return (
            f"the Kafka broker at {settings.kafka_bootstrap_servers} refused {who!r} access to "
            f"{on} ({exc.message}): this needs the credentials of a principal the cluster's ACLs "
            "allow it (TRUST_KAFKA_SASL_USERNAME, TRUST_KAFKA_SASL_PASSWORD)"
        )
    if isinstance(exc, KafkaConnectionError):
        return no_broker_message(settings)
    if isinstance(exc, KafkaTimeoutError):
        return f"the Kafka broker at {settings.kafka_bootstrap_servers} did not answer in time"
    return f"Kafka error at {settings.kafka_bootstrap_servers}: {exc!r}"


@contextmanager
def kafka_errors(settings: Settings) -> Iterator[None]:
    """Turn the broker's failures into one-line user errors."""
    try:
        yield
    except KafkaError as exc:
        raise UserError(kafka_error_message(settings, exc)) from exc


async def partition_counts(settings: Settings, topics: Sequence[str]) -> dict[str, int]:
    """Partition count of each of ``topics`` that exists; nothing is created."""
    from streams.kafka import clients
    from streams.kafka.topicadmin import describe_partition_counts

    admin = clients.admin(settings, purpose="cli-admin")
    await admin.start()
    try:
        return await describe_partition_counts(admin, topics)
    finally:
        await admin.close()


async def require_topics(settings: Settings, topics: Sequence[str]) -> dict[str, int]:
    """Partition counts of ``topics``; :class:`TopicLayoutError` naming any that do not exist."""
    counts = await partition_counts(settings, topics)
    missing = [t for t in topics if t not in counts]
    if missing:
        where = settings.kafka_bootstrap_servers
        if len(missing) == 1:
            problem = f"topic {missing[0]} does not exist at {where}"
        elif len(missing) == len(topics):
            problem = (
                f"none of the {len(topics)} topics with prefix {settings.topic_prefix!r} "
                f"exist at {where}"
            )
        else:
            problem = (
                f"{len(missing)} of {len(topics)} topics missing at {where}: {', '.join(missing)}"
            )
        raise TopicLayoutError(
            f"{problem}; create the topics with 'trust-streams topics' "
            "(or check TRUST_TOPIC_PREFIX / --topic-prefix)"
        )
    return counts


def run_async(settings: Settings, work: Awaitable[T]) -> T:
    """Run one command's coroutine to the end, with Kafka failures as user errors."""

    async def main() -> T:
        return await work

    with kafka_errors(settings):
        return asyncio.run(main())


# --- worker, topics, schemas, demo ------------------------------------------------------------


def command_worker(args: argparse.Namespace) -> NoReturn:
    import faust

    from streams.app import create_app
    from streams.kafka.logthrottle import throttle_repeated_logs
    from streams.kafka.topicadmin import ensure_topics

    settings = load_settings(args)
    configure_logging(settings.log_level)
    throttle_repeated_logs()
    log.info("Starting worker with settings %s", settings.masked())
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    with kafka_errors(settings):
        report = loop.run_until_complete(ensure_topics(settings))
    if report.created:
        log.info("Created %d topics", len(report.created))
    trust = create_app(settings)
    # The first take-over comes right after start: its restore processes start (0.3 s each)
    # while Faust starts and joins the group.
    loop.run_until_complete(trust.restorers.warm_up(settings.partitions))
    relax_garbage_collection()
    worker = faust.Worker(trust.app, loop=loop, loglevel=settings.log_level, quiet=True)
    worker.execute_from_commandline()  # runs until stopped, then exits the process


def relax_garbage_collection() -> None:
    """Run CPython's cycle collector rarely, and never over what start-up allocated.

    Why: a worker keeps hundreds of thousands of long-lived objects (window schedules, cached
    and staged agent states) and allocates a few per signal; with the default thresholds the
    collector keeps walking all of them, a cost that grows with the number of agents. Agent
    states hold no reference cycles, so reference counting frees them; the collector is only a
    backstop here.
    """
    gc.freeze()
    gc.set_threshold(100_000, 50, 1_000)


def command_topics(args: argparse.Namespace) -> int:
    from streams.kafka.topicadmin import ensure_topics

    settings = load_settings(args)
    quiet_client_logs(settings)
    names = TopicNames(settings.topic_prefix)
    if args.check:
        counts = run_async(settings, _check_topics(settings))
        created: tuple[str, ...] = ()
    else:
        report = run_async(settings, ensure_topics(settings))
        counts, created = report.existing, report.created
    for topic in names.all:
        marker = " (created)" if topic in created else ""
        count = counts[topic]
        print(f"{topic}\t{count} partition{'' if count == 1 else 's'}{marker}")
    verb = "checked" if args.check else "ready"
    print(f"{len(counts)} topics {verb} at {settings.kafka_bootstrap_servers}")
    return 0


async def _check_topics(settings: Settings) -> dict[str, int]:
    """Every topic exists and the co-partitioned ones have TRUST_PARTITIONS; nothing is created."""
    from streams.kafka.topicadmin import check_layout

    names = TopicNames(settings.topic_prefix)
    counts = await require_topics(settings, list(names.all))
    check_layout(names, counts, settings.partitions)
    return counts


def command_schemas(args: argparse.Namespace) -> int:
    from streams.messages import json_schema, message_models

    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        for stem, model in message_models().items():
            path = out / f"{stem}.schema.json"
            path.write_text(json.dumps(json_schema(model), indent=2, sort_keys=True) + "\n")
            print(path)
    except OSError as exc:
        raise UserError(f"cannot write schemas to {out}: {exc.strerror or exc}") from exc
    return 0


def command_demo(args: argparse.Namespace) -> int:
    """``streams.demo.run_demo(args)``, imported only when asked for (it may not be installed)."""
    try:
        demo = importlib.import_module("streams.demo")
    except ModuleNotFoundError as exc:
        if exc.name not in ("streams.demo", "streams"):
            raise
        raise UserError("the demo is not available in this installation (no streams.demo)") from exc
    run_demo = getattr(demo, "run_demo", None)
    if run_demo is None:
        raise UserError("the demo is not available: streams.demo has no run_demo")
    settings = load_settings(args)
    quiet_client_logs(settings)
    with kafka_errors(settings):
        result = run_demo(args)
        if inspect.isawaitable(result):
            result = run_async(settings, result)
    return 0 if result is None else int(result)
