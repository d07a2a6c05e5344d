"""The one settings object. Every knob is read from the environment with the prefix ``TRUST_``."""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.errors import InvalidSettings
from streams.kafka.security import (
    KafkaSecurity,
    SaslMechanism,
    SecurityProtocol,
    environment_name,
)
from streams.scoring.model import DEFAULT_WEIGHTS, ScoringConfig, config_problems
from streams.scoring.windows import WindowPolicy
from streams.web.advertise import check_advertised_url

log = logging.getLogger(__name__)

ENV_PREFIX: Final = "TRUST_"
#: ``TRUST_`` variables that are not settings, and what reads them. Every other ``TRUST_``
#: variable must name a setting: an unknown one (a typo) stops the service at start, so that a
#: misspelt security setting can never leave a client connecting without it.
ENVIRONMENT_OUTSIDE_SETTINGS: Final[Mapping[str, str]] = {
    "TRUST_TESTS_KEEP_BROKER": "the tests keep the local broker they started (tests/support)",
    "TRUST_DEMO_KEEP_BROKER": "the demo keeps the local broker it started (streams/demo.py)",
}
#: An idle-agent TTL spans at least this many state flush intervals (see _check_agent_ttl).
TTL_FLUSH_INTERVALS: Final = 3


class KafkaSecuritySettings(BaseSettings):
    """How every Kafka client of the service reaches the brokers: TLS and SASL.

    Part of :class:`Settings`, the one settings object (a class apart only to keep each short);
    :class:`~streams.kafka.security.KafkaSecurity` checks the combination.
    """

    kafka_security_protocol: SecurityProtocol = Field(
        default="PLAINTEXT",
        description="PLAINTEXT, SSL (TLS), SASL_PLAINTEXT (credentials, no TLS) or SASL_SSL.",
    )
    kafka_sasl_mechanism: SaslMechanism | None = Field(
        default=None, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (SASL protocols only)."
    )
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = Field(
        default=None, description="Never logged or shown (masked in reprs and the start log)."
    )
    kafka_ssl_cafile: Path | None = Field(
        default=None,
        description="PEM file of the CA that signed the brokers' certificates (default: the "
        "system's CAs).",
    )
    kafka_ssl_certfile: Path | None = Field(
        default=None, description="PEM client certificate (with kafka_ssl_keyfile) for mutual TLS."
    )
    kafka_ssl_keyfile: Path | None = Field(default=None, description="Its unencrypted PEM key.")
    kafka_ssl_check_hostname: bool = Field(
        default=True,
        description="The broker's certificate must name the host connected to. Off, it must "
        "still be signed by the CA.",
    )

    @field_validator(
        "kafka_sasl_username",
        "kafka_sasl_password",
        "kafka_ssl_cafile",
        "kafka_ssl_certfile",
        "kafka_ssl_keyfile",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        # An empty variable (as compose files and env files leave them) means not given.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("kafka_security_protocol", "kafka_sasl_mechanism", mode="before")
    @classmethod
    def _upper_case(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        return value.strip().upper() or None

    @model_validator(mode="after")
    def _check_kafka_security(self) -> KafkaSecuritySettings:
        problems = self.kafka_security.problems()
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def kafka_security(self) -> KafkaSecurity:
        """The security options every client of the service connects with."""
        return KafkaSecurity(
            security_protocol=self.kafka_security_protocol,
            sasl_mechanism=self.kafka_sasl_mechanism,
            sasl_username=self.kafka_sasl_username,
            sasl_password=self.kafka_sasl_password,
            ssl_cafile=self.kafka_ssl_cafile,
            ssl_certfile=self.kafka_ssl_certfile,
            ssl_keyfile=self.kafka_ssl_keyfile,
            ssl_check_hostname=self.kafka_ssl_check_hostname,
            naming=environment_name,
        )


class Settings(KafkaSecuritySettings):
    """Read from ``TRUST_<NAME>`` variables (and keyword arguments, which take precedence).

    An invalid value, an unknown keyword or an unknown ``TRUST_`` variable raises
    :class:`InvalidSettings` naming each problem.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="forbid")

    def __init__(self, **values: Any) -> None:
        unknown = unknown_variables(os.environ)
        if unknown:
            raise InvalidSettings(unknown)
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise InvalidSettings(_named_problems(exc)) from exc

    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:19092",
        description="Comma-separated host:port list. The default is the local development broker.",
    )
    topic_prefix: str = Field(default="agentmesh.", description="Prefix of every topic name.")
    partitions: int = Field(default=6, ge=1, le=1024, description="Partitions of every topic.")
    replication_factor: int = Field(default=1, ge=1)
    app_id: str = Field(default="trust-scorer", description="Consumer group and state namespace.")
    session_timeout_seconds: float = Field(
        default=10.0,
        ge=6,
        le=300,
        description="A worker silent this long is presumed dead and its partitions move.",
    )

    window_seconds: float = Field(default=30.0, gt=0, le=3600)
    grace_seconds: float = Field(default=5.0, ge=0, le=3600)
    signal_merge_wait_seconds: float = Field(
        default=0.0,
        ge=0,
        le=10,
        description=(
            "Signals of a partition's five topics are applied in the order of their times; with "
            "another topic caught up, one waits at most this long after its time for an earlier "
            "one of that topic still on its way (0, as Kafka Streams' max.task.idle.ms: no wait). "
            "Live outputs equal a replay's when signals reach the worker within this time."
        ),
    )
    tick_interval_seconds: float = Field(
        default=0.25,
        gt=0,
        le=60,
        description="How often each worker checks for closed windows (bounds emission lag).",
    )

    revocation_threshold: int = Field(default=300, ge=0, le=1000)
    warning_threshold: int = Field(default=500, ge=0, le=1000)
    weight_policy_compliance: float = DEFAULT_WEIGHTS[0]
    weight_resource_efficiency: float = DEFAULT_WEIGHTS[1]
    weight_output_quality: float = DEFAULT_WEIGHTS[2]
    weight_security_posture: float = DEFAULT_WEIGHTS[3]
    weight_collaboration_health: float = DEFAULT_WEIGHTS[4]

    state_dir: Path = Field(default=Path(".local/state"), description="RocksDB state lives here.")
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=6066, ge=0, le=65535)
    admin_token: SecretStr = Field(
        default=SecretStr(""), description="Bearer token for changes over HTTP (grants reads too)."
    )
    web_advertised_url: str = Field(
        default="",
        description="URL other workers reach this worker's HTTP API at, e.g. "
        "http://scorer-1:6066 (unset: the bind address, or when bound to every interface this "
        "host's address towards the brokers); an unspecified address (0.0.0.0) is refused.",
    )
    api_read_token: SecretStr = Field(
        default=SecretStr(""),
        description="Bearer token every read of agents and configuration over HTTP needs (the "
        "admin token also grants reads); unset: reads are open.",
    )
    api_fleet_pages_per_second: float = Field(
        default=10.0,
        gt=0,
        le=1000,
        description="Pages of the fleet-wide views (/agents/at-risk, /health-report) a worker "
        "starts per second at most, however many clients ask: reading the fleet never takes "
        "more than a small share of scoring's time.",
    )
    web_forward_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        le=120,
        description="How long a worker waits for another when it forwards a request or asks "
        "every worker; a fleet-wide answer without a late worker is partial and names it.",
    )

    @field_validator("web_advertised_url")
    @classmethod
    def _check_advertised_url(cls, value: str) -> str:
        return check_advertised_url(value)

    batch_max: int = Field(default=2000, ge=1, description="Most records a batch or turn takes.")
    batch_within_seconds: float = Field(default=0.05, gt=0)
    state_cache_agents: int = Field(
        default=20_000, ge=0, description="Decoded agent states kept in memory between batches."
    )
    state_held_max_agents: int = Field(
        default=100_000,
        ge=0,
        description="Changed agent states held in memory before they are written, beyond which "
        "signals wait for a write to finish (0: no limit): memory stays bounded when the load "
        "outruns the worker.",
    )
    state_cache_mb: int = Field(
        default=512,
        ge=0,
        description="Memory (estimated) for the decoded agent states kept between batches; the "
        "cache stops at this or at state_cache_agents, whichever comes first. A full state "
        "is estimated at 34 KiB: 512 MiB holds 15,000 of them, so 10,000 busy agents with full "
        "histories are not decoded again at every batch.",
    )
    rocksdb_memory_mb: int = Field(
        default=256,
        ge=8,
        description="RocksDB's memory for the agent state, across all the partitions a worker "
        "owns: one block cache that the memtables are charged to (up to half of it).",
    )
    restore_processes: int = Field(
        default=0,
        ge=0,
        le=256,
        description=(
            "Processes a worker restores and checks the partitions it takes over in, side by "
            "side (each a share of the partitions, a core each): 0 is one per CPU the worker may "
            "use; 1 restores in the worker's own process. Never more than the partitions."
        ),
    )
    fetch_bytes_per_partition: int = Field(
        default=64 * 1024,
        ge=16 * 1024,
        description="Prefetch per tick or command partition; bounds how long a tick waits.",
    )
    signal_fetch_bytes_per_partition: int = Field(
        default=1024 * 1024,
        ge=16 * 1024,
        description="Prefetch per signal partition (signals have their own consumer).",
    )
    max_message_bytes: int = Field(default=64 * 1024, ge=1024)
    dead_letter_value_bytes: int = Field(
        default=4096,
        ge=0,
        le=256 * 1024,
        description=(
            "Bytes of a refused record's value a dead letter keeps (with the original's size and "
            "SHA-256, and a flag when cut): a dead letter always fits in what the broker accepts."
        ),
    )
    tick_tolerance_seconds: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description=(
            "A tick further than this from the worker's clock is ignored, and a partition clock "
            "is never further ahead of the wall clock than this."
        ),
    )
    # 5 s, not 2: fewer state encodings, and revocations wait less (docs/benchmarks.md).
    state_flush_seconds: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description=(
            "How often staged agent states are written (besides before every output): an agent "
            "active in that time is encoded and written once. A crash replays at most this long."
        ),
    )
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field(
        default="zstd",
        description=(
            "Compression of everything the worker produces. Changelog states compress about 7x "
            "with zstd at about 2 us each; snappy is cheaper but compresses half as well, and "
            "aiokafka's lz4 (level 9) costs ten times as much CPU."
        ),
    )
    agent_ttl_days: float = Field(
        default=0.0,
        ge=0,
        description=(
            "Remove an agent no signal has been applied to for this many days (by the worker's "
            "wall clock), unless it has an open window or is revoked: deleted locally and "
            "tombstoned on the changelog. Fractions allowed; 0 keeps every agent forever."
        ),
    )
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _check_scoring_defaults(self) -> Settings:
        problems = config_problems(
            self.default_weights, self.revocation_threshold, self.warning_threshold
        )
        if problems:
            raise ValueError("invalid scoring defaults: " + "; ".join(problems))
        return self

    @model_validator(mode="after")
    def _check_agent_ttl(self) -> Settings:
        # Positions are stored every state_flush_seconds: an agent removed sooner than a few of
        # those after its last signal could have it replayed after a crash onto a fresh state.
        least = TTL_FLUSH_INTERVALS * self.state_flush_seconds
        if 0 < self.agent_ttl_seconds < least:
            raise ValueError(
                f"agent_ttl_days is {self.agent_ttl_seconds:.1f} s: set 0 (off) or at least "
                f"{TTL_FLUSH_INTERVALS} state flush intervals ({least:.1f} s)"
            )
        return self

    @property
    def agent_ttl_seconds(self) -> float:
        return self.agent_ttl_days * 86_400

    @property
    def default_weights(self) -> tuple[float, float, float, float, float]:
        return (
            self.weight_policy_compliance,
            self.weight_resource_efficiency,
            self.weight_output_quality,
            self.weight_security_posture,
            self.weight_collaboration_health,
        )

    @cached_property
    def scoring_config(self) -> ScoringConfig:
        return ScoringConfig.validated(
            self.default_weights, self.revocation_threshold, self.warning_threshold, version=0
        )

    @cached_property
    def window_policy(self) -> WindowPolicy:
        return WindowPolicy(
            size_ms=round(self.window_seconds * 1000), grace_ms=round(self.grace_seconds * 1000)
        )

    def masked(self) -> dict[str, Any]:
        """Settings as a dict safe to log: secrets (every ``SecretStr``) are shown only as set
        or unset, paths as text."""
        shown = self.model_dump()
        for name, value in shown.items():
            if isinstance(value, SecretStr):
                shown[name] = "***" if value.get_secret_value() else "(unset)"
            elif isinstance(value, Path):
                shown[name] = str(value)
        return shown


def known_variables() -> frozenset[str]:
    """Every ``TRUST_`` variable the service reads: the settings, and the few read elsewhere."""
    settings = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
    return frozenset(settings | ENVIRONMENT_OUTSIDE_SETTINGS.keys())


def unknown_variables(environ: Mapping[str, str]) -> list[tuple[str | None, str]]:
    """A problem for each ``TRUST_`` variable in ``environ`` that nothing reads, with the known
    name it most resembles."""
    known = known_variables()
    problems: list[tuple[str | None, str]] = []
    # Settings are read whatever the case of the variable's name: so is the check.
    for variable in sorted(v for v in environ if v.upper().startswith(ENV_PREFIX)):
        if variable.upper() in known:
            continue
        close = difflib.get_close_matches(variable.upper(), known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else "see README.md for the settings"
        problems.append((variable, f"unknown setting ({hint}); rename or remove it"))
    return problems


def _named_problems(exc: ValidationError) -> list[tuple[str | None, str]]:
    """Pydantic's errors as (``TRUST_`` variable or ``None``, message)."""
    problems: list[tuple[str | None, str]] = []
    for error in exc.errors(include_url=False):
        field = "_".join(str(p) for p in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        problems.append((f"{ENV_PREFIX}{field.upper()}" if field else None, message))
    return problems
