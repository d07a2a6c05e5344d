#!/usr/bin/env python3
"""The service's Kafka ACLs as code: who may do what in one deployment (topic prefix, app id).

    python deploy/acls.py plan   [--prefix P] [--app-id A] [--principal ROLE=NAME ...]
    python deploy/acls.py apply  [same] [--env FILE] [--bootstrap HOST:PORT] [--timeout S]
    python deploy/acls.py remove [same] [--env FILE] [--bootstrap HOST:PORT]
    python deploy/acls.py users  (the SCRAM users deploy/local/kafka creates, one a line)

``plan`` prints the set without connecting. ``apply`` creates every binding (creating one that
exists changes nothing, so applying twice is safe) and returns once the broker enforces all of them
(DescribeAcls is answered from the broker's own authorizer, so "described" means "in force").
``remove`` deletes exactly the bindings of the set, and returns once none is in force (a binding
the set shares with another deployment of the same app id goes too). Neither touches any other
binding.

The connection is the one every client of the service uses, from ``TRUST_KAFKA_*`` variables: in
the environment, or in the file given to ``--env`` (deploy/local/kafka writes one per principal
under .local/kafka-secure/principals/; apply with ``admin.env``, or with any principal allowed
to alter ACLs on the cluster). ``--bootstrap`` overrides the address.

Which topics: :class:`streams.kafka.topics.TopicNames` of ``--prefix`` (default
``TRUST_TOPIC_PREFIX``, else ``agentmesh.``) and Faust's own topics, which all start with
``<app id>-`` (the leader-election topic ``<app id>-__assignor-__leader`` and the table
changelog ``<app id>-agent-state-changelog``; default ``TRUST_APP_ID``, else ``trust-scorer``).
Service topics are named one by one (LITERAL patterns: the exact topics, not whatever else starts
with the prefix); Faust's internal topics and the readers' consumer groups are PREFIXED patterns,
because their names are chosen at run time. The set is applied per prefix: a test applies it to
its own prefix.

The roles (``--principal worker=svc-trust`` names the user another cluster has for a role):

- ``producer-<dimension>``: writes its own dimension's signal topic, nothing else;
- ``worker``: reads signals, writes scores, revocations (and the reinstatement audit records on
  it) and dead letters, reads scores and revocations back (the dashboard's event stream), reads
  and writes the internal topics (ticks, commands, config, agent-state changelog) and Faust's,
  creates them when missing, uses its consumer group (the app id);
- ``operator`` (the trust-streams console): writes config and commands, reads config,
  revocations, scores and dead letters (``config``, ``reinstate``, ``watch``), describes every
  topic (``topics --check``);
- ``security-team``: reads revocations, in consumer groups named ``<prefix>security-team...``;
- ``scores-reader``: reads scores, in consumer groups named ``<prefix>scores-reader...``;
- ``admin`` is no role here: the broker lists it in ``super.users`` (creating topics, ACLs).

Idempotent producers need no cluster-wide IdempotentWrite: since Kafka 3.0 (KIP-679) Write on a
topic is enough. Nothing here is transactional, so there are no transactional-id bindings.

Why a small client of its own: aiokafka's admin client (0.14) has no ACL calls, and Kafka's
AclCommand lives in kafka-tools, which the local broker's jars do not include (and it would need a
JVM on every machine that applies ACLs). aiokafka does carry the CreateAcls, DescribeAcls and
DeleteAcls request types (v1, which every Kafka from 2.0 to 4.x speaks) and does TLS and SASL
itself, so this sends those requests through aiokafka's client: one request for the whole set.
"""

from __future__ import annotations

import argparse
import asyncio
import enum
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a script from a checkout without the package installed
    sys.path.insert(0, str(REPO_ROOT))

from aiokafka.client import AIOKafkaClient  # noqa: E402
from aiokafka.protocol.admin import (  # noqa: E402
    CreateAclsRequest_v1,
    DeleteAclsRequest_v1,
    DescribeAclsRequest,
)
from aiokafka.protocol.api import Request  # noqa: E402
from pydantic import SecretStr  # noqa: E402

from streams.kafka.security import (  # noqa: E402
    KafkaSecurity,
    SaslMechanism,
    SecurityProtocol,
    environment_name,
)
from streams.kafka.topics import TopicNames  # noqa: E402
from streams.scoring.model import DIMENSIONS  # noqa: E402

DEFAULT_PREFIX = "agentmesh."
DEFAULT_APP_ID = "trust-scorer"

ADMIN = "admin"
WORKER = "worker"
OPERATOR = "operator"
SECURITY_TEAM = "security-team"
SCORES_READER = "scores-reader"
PRODUCERS = tuple(f"producer-{d.value}" for d in DIMENSIONS)
#: Every role of the set, in the order the plan lists them.
ROLES = (WORKER, OPERATOR, SECURITY_TEAM, SCORES_READER, *PRODUCERS)
#: The SCRAM users of the local secured broker: the roles, and the super user.
USERS = (ADMIN, *ROLES)


class AclError(RuntimeError):
    """The broker refused or did not confirm a change; the message says which and why."""


# Kafka's wire codes (org.apache.kafka.common.resource / .acl).
class ResourceType(enum.IntEnum):
    ANY = 1
    TOPIC = 2
    GROUP = 3
    CLUSTER = 4
    TRANSACTIONAL_ID = 5


class PatternType(enum.IntEnum):
    ANY = 1
    LITERAL = 3
    PREFIXED = 4


class Operation(enum.IntEnum):
    ANY = 1
    READ = 3
    WRITE = 4
    CREATE = 5
    DESCRIBE = 8
    DESCRIBE_CONFIGS = 10


ALLOW = 3
ANY_PERMISSION = 1
ANY_HOST = "*"


@dataclass(frozen=True, order=True, slots=True)
class Acl:
    """One ALLOW binding: ``principal`` may do ``operation`` on the resource, from any host."""

    principal: str
    resource_type: ResourceType
    pattern: PatternType
    name: str
    operation: Operation

    def describe(self) -> str:
        kind = self.resource_type.name.lower()
        pattern = "" if self.pattern is PatternType.LITERAL else f" ({self.pattern.name.lower()})"
        return f"{self.principal:<38} {self.operation.name:<16} {kind} {self.name}{pattern}"

    def wire(self) -> tuple[int, str, int, str, str, int, int]:
        """The binding as CreateAcls v1 and DeleteAcls v1 (an exact filter) both encode it."""
        return (
            int(self.resource_type),
            self.name,
            int(self.pattern),
            self.principal,
            ANY_HOST,
            int(self.operation),
            ALLOW,
        )


@dataclass(frozen=True, slots=True)
class Deployment:
    """What the set is for: the topic prefix, the app id, and the principal of each role."""

    prefix: str = DEFAULT_PREFIX
    app_id: str = DEFAULT_APP_ID
    principals: Mapping[str, str] | None = None

    def principal(self, role: str) -> str:
        named = (self.principals or {}).get(role, role)
        return named if ":" in named else f"User:{named}"

    def group_prefix(self, role: str) -> str:
        """Consumer groups a reader role may use start with this."""
        return f"{self.prefix}{role}"


def _topic(principal: str, topic: str, *operations: Operation) -> list[Acl]:
    return [Acl(principal, ResourceType.TOPIC, PatternType.LITERAL, topic, op) for op in operations]


def acl_set(deployment: Deployment) -> list[Acl]:
    """Every binding of the deployment, sorted, without repeats."""
    names = TopicNames(deployment.prefix)
    read, write, describe = Operation.READ, Operation.WRITE, Operation.DESCRIBE
    acls: list[Acl] = []

    for role, topic in zip(PRODUCERS, names.signals, strict=True):
        acls += _topic(deployment.principal(role), topic, write, describe)

    worker = deployment.principal(WORKER)
    for topic in names.signals:
        acls += _topic(worker, topic, read, describe)
    for topic in (names.scores, names.revocations, names.deadletter):
        acls += _topic(worker, topic, write, describe)
    # Every worker's dashboard streams the whole fleet's updates (streams/web/events.py).
    for topic in (names.scores, names.revocations):
        acls += _topic(worker, topic, read)
    for topic in (names.ticks, names.commands, names.agent_state, names.config):
        acls += _topic(worker, topic, read, write, describe)
    # The worker reads the config topic's settings at start (see streams.kafka.topicadmin), and
    # creates whichever of its topics are missing.
    acls += _topic(worker, names.config, Operation.DESCRIBE_CONFIGS)
    for topic in names.all:
        acls += _topic(worker, topic, Operation.CREATE)
    # Faust's internal topics all start with the app id; Faust creates them itself.
    acls += [
        Acl(worker, ResourceType.TOPIC, PatternType.PREFIXED, f"{deployment.app_id}-", op)
        for op in (read, write, describe, Operation.CREATE)
    ]
    acls += [
        Acl(worker, ResourceType.GROUP, PatternType.LITERAL, deployment.app_id, op)
        for op in (read, describe)
    ]

    operator = deployment.principal(OPERATOR)
    acls += _topic(operator, names.config, read, write, describe)
    acls += _topic(operator, names.commands, write, describe)
    for topic in (names.revocations, names.scores, names.deadletter):
        acls += _topic(operator, topic, read, describe)
    for topic in names.all:  # `topics --check` reads every topic's partition count
        acls += _topic(operator, topic, describe)

    for role, topic in ((SECURITY_TEAM, names.revocations), (SCORES_READER, names.scores)):
        principal = deployment.principal(role)
        acls += _topic(principal, topic, read, describe)
        acls += [
            Acl(
                principal,
                ResourceType.GROUP,
                PatternType.PREFIXED,
                deployment.group_prefix(role),
                op,
            )
            for op in (read, describe)
        ]
    return sorted(set(acls))


# --- talking to the cluster ---------------------------------------------------------------------


class _CreateAcls(Request[CreateAclsRequest_v1]):
    """CreateAcls with every binding in one request (aiokafka's own sends one per request)."""

    API_KEY = 30

    def __init__(self, acls: Sequence[Acl]) -> None:
        self._creations = [acl.wire() for acl in acls]

    def build(self, request_struct_class: type[CreateAclsRequest_v1]) -> CreateAclsRequest_v1:
        return request_struct_class(self._creations)


class _DeleteAcls(Request[DeleteAclsRequest_v1]):
    """DeleteAcls with one exact filter per binding."""

    API_KEY = 31

    def __init__(self, acls: Sequence[Acl]) -> None:
        self._filters = [acl.wire() for acl in acls]

    def build(self, request_struct_class: type[DeleteAclsRequest_v1]) -> DeleteAclsRequest_v1:
        return request_struct_class(self._filters)


def client_options(env: Mapping[str, str]) -> dict[str, Any]:
    """aiokafka client options from ``TRUST_KAFKA_*`` values (a principal's .env file), built
    and checked as every client of the service builds them (:class:`KafkaSecurity`)."""

    def path(name: str) -> Path | None:
        value = env.get(f"TRUST_KAFKA_{name}")
        return Path(value) if value else None

    password = env.get("TRUST_KAFKA_SASL_PASSWORD")
    security = KafkaSecurity(
        # Literal types only: anything else is named by problems() below.
        security_protocol=cast(
            SecurityProtocol, env.get("TRUST_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT").upper()
        ),
        sasl_mechanism=cast(SaslMechanism | None, env.get("TRUST_KAFKA_SASL_MECHANISM") or None),
        sasl_username=env.get("TRUST_KAFKA_SASL_USERNAME") or None,
        sasl_password=SecretStr(password) if password else None,
        ssl_cafile=path("SSL_CAFILE"),
        ssl_certfile=path("SSL_CERTFILE"),
        ssl_keyfile=path("SSL_KEYFILE"),
        ssl_check_hostname=env.get("TRUST_KAFKA_SSL_CHECK_HOSTNAME", "true").lower()
        not in ("false", "0", "no"),
        naming=environment_name,
    )
    if problems := security.problems():
        raise ValueError("; ".join(problems))
    return {
        "bootstrap_servers": env.get("TRUST_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092"),
        **security.aiokafka_options(),
    }


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines; blank lines and ``#`` comments skipped, values may be quoted."""
    values: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip().removeprefix("export ").strip()] = value
    return values


def _bindings(response: Any) -> set[Acl]:
    """The ALLOW bindings of a DescribeAcls v1 answer (the kinds this module knows)."""
    found: set[Acl] = set()
    for resource_type, name, pattern, acls in response.resources:
        for principal, host, operation, permission in acls:
            if host != ANY_HOST or permission != ALLOW:
                continue
            try:
                found.add(
                    Acl(
                        principal,
                        ResourceType(resource_type),
                        PatternType(pattern),
                        name,
                        Operation(operation),
                    )
                )
            except ValueError:
                continue  # an operation or resource kind the set never uses
    return found


class AclAdmin:
    """CreateAcls, DescribeAcls and DeleteAcls through one aiokafka client."""

    def __init__(self, options: Mapping[str, Any], request_timeout_ms: int = 15_000) -> None:
        self._client = AIOKafkaClient(
            **options, client_id="trust-streams-acls", request_timeout_ms=request_timeout_ms
        )

    async def __aenter__(self) -> AclAdmin:
        await self._client.bootstrap()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.close()

    async def _send(self, request: Any) -> Any:
        return await self._client.send(self._client.get_random_node(), request)

    async def describe(self) -> set[Acl]:
        response = await self._send(
            DescribeAclsRequest(
                int(ResourceType.ANY),
                None,  # type: ignore[arg-type]  # null: any name
                int(PatternType.ANY),
                None,  # type: ignore[arg-type]  # any principal
                None,  # type: ignore[arg-type]  # any host
                int(Operation.ANY),
                ANY_PERMISSION,
            )
        )
        if response.error_code != 0:
            raise AclError(
                f"DescribeAcls refused: error code {response.error_code} ({response.error_message})"
            )
        return _bindings(response)

    async def create(self, acls: Sequence[Acl]) -> None:
        response = await self._send(_CreateAcls(acls))
        failed = [
            f"{acl.describe().strip()}: error code {code} ({message})"
            for acl, (code, message) in zip(acls, response.creation_responses, strict=True)
            if code != 0
        ]
        if failed:
            raise AclError("CreateAcls refused:\n  " + "\n  ".join(failed))

    async def delete(self, acls: Sequence[Acl]) -> int:
        response = await self._send(_DeleteAcls(acls))
        deleted = 0
        for acl, (code, message, matching) in zip(acls, response.filter_responses, strict=True):
            if code != 0:
                raise AclError(f"DeleteAcls refused {acl.describe().strip()}: {code} ({message})")
            deleted += len(matching)
        return deleted


async def apply(options: Mapping[str, Any], acls: Sequence[Acl], timeout: float = 30.0) -> None:
    """Create every binding, and return once the broker enforces all of them."""
    async with AclAdmin(options) as admin:
        await admin.create(acls)
        deadline = time.monotonic() + timeout
        while True:
            missing = set(acls) - await admin.describe()
            if not missing:
                return
            if time.monotonic() > deadline:
                listed = "\n  ".join(acl.describe() for acl in sorted(missing))
                raise AclError(f"created, but not in force after {timeout:g} s:\n  {listed}")
            await asyncio.sleep(0.05)


async def remove(options: Mapping[str, Any], acls: Sequence[Acl], timeout: float = 30.0) -> int:
    """Delete exactly these bindings, and return once none is in force; how many there were."""
    async with AclAdmin(options) as admin:
        deleted = await admin.delete(acls)
        deadline = time.monotonic() + timeout
        while left := set(acls) & await admin.describe():
            if time.monotonic() > deadline:
                listed = "\n  ".join(acl.describe() for acl in sorted(left))
                raise AclError(f"deleted, but still in force after {timeout:g} s:\n  {listed}")
            await asyncio.sleep(0.05)
        return deleted


# --- command line ---------------------------------------------------------------------------------


def _principal_overrides(pairs: Iterable[str]) -> dict[str, str]:
    overrides: dict[str, str] = {}
    for pair in pairs:
        role, sep, name = pair.partition("=")
        if not sep or not name or role not in ROLES:
            raise ValueError(f"--principal wants ROLE=NAME with ROLE one of {', '.join(ROLES)}")
        overrides[role] = name
    return overrides


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deploy/acls.py", description="The service's Kafka ACLs for one deployment."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("users", help="the SCRAM users of the local secured broker")
    for name, help_text in (
        ("plan", "print the bindings, connect to nothing"),
        ("apply", "create the bindings and wait until they are in force"),
        ("remove", "delete the bindings"),
    ):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument(
            "--prefix",
            default=os.environ.get("TRUST_TOPIC_PREFIX", DEFAULT_PREFIX),
            help="topic prefix (default: TRUST_TOPIC_PREFIX, else %(default)s)",
        )
        sub.add_argument(
            "--app-id",
            default=os.environ.get("TRUST_APP_ID", DEFAULT_APP_ID),
            help="the worker's app id: its consumer group, Faust's topic prefix",
        )
        sub.add_argument(
            "--principal",
            action="append",
            default=[],
            metavar="ROLE=NAME",
            help="the user of a role (default: the role's name), repeatable",
        )
        if name != "plan":
            sub.add_argument("--env", type=Path, help="TRUST_KAFKA_* file to connect with")
            sub.add_argument("--bootstrap", help="brokers (overrides the environment and --env)")
            sub.add_argument(
                "--timeout",
                type=float,
                default=30.0,
                help="seconds to wait for the change to be in force (default %(default)s)",
            )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "users":
        print("\n".join(USERS))
        return 0
    try:
        deployment = Deployment(args.prefix, args.app_id, _principal_overrides(args.principal))
    except ValueError as exc:
        print(f"acls: {exc}", file=sys.stderr)
        return 2
    acls = acl_set(deployment)
    if args.command == "plan":
        print("\n".join(acl.describe() for acl in acls))
        return 0

    env = {k: v for k, v in os.environ.items() if k.startswith("TRUST_KAFKA_")}
    if args.env is not None:
        env.update(read_env_file(args.env))
    if args.bootstrap:
        env["TRUST_KAFKA_BOOTSTRAP_SERVERS"] = args.bootstrap
    options = client_options(env)
    where = options["bootstrap_servers"]
    try:
        if args.command == "apply":
            asyncio.run(apply(options, acls, args.timeout))
            print(f"acls: {len(acls)} bindings in force for prefix {args.prefix!r} at {where}")
        else:
            deleted = asyncio.run(remove(options, acls, args.timeout))
            print(f"acls: deleted {deleted} bindings for prefix {args.prefix!r} at {where}")
    except Exception as exc:  # one line for the operator, whatever failed
        print(f"acls: {args.command} at {where} failed: {exc!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
