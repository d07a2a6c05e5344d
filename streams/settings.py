"""The one settings object. Every knob is read from the environment with the prefix ``TRUST_``."""

from __future__ import annotations

import logging
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.scoring.model import DEFAULT_WEIGHTS, ScoringConfig, config_problems
from streams.scoring.windows import WindowPolicy

log = logging.getLogger(__name__)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRUST_", frozen=True, extra="ignore")

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
    admin_token: SecretStr = Field(default=SecretStr(""), description="Bearer token for changes.")

    batch_max: int = Field(default=2000, ge=1, description="Signals taken per processing batch.")
    batch_within_seconds: float = Field(default=0.05, gt=0)
    state_cache_agents: int = Field(
        default=20_000, ge=0, description="Decoded agent states kept in memory between batches."
    )
    state_held_max_agents: int = Field(
        default=50_000,
        ge=0,
        description="Changed agent states held in memory before they are written, beyond which "
        "signals wait for a write to finish (0: no limit): memory stays bounded when the load "
        "outruns the worker.",
    )
    state_cache_mb: int = Field(
        default=256,
        ge=0,
        description="Memory (estimated) for the decoded agent states kept between batches; the "
        "cache stops at this or at state_cache_agents, whichever comes first.",
    )
    rocksdb_memory_mb: int = Field(
        default=256,
        ge=8,
        description="RocksDB's memory for the agent state, across all the partitions a worker "
        "owns: one block cache that the memtables are charged to (up to half of it).",
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
    state_flush_seconds: float = Field(
        default=2.0,
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
        # Signal positions are stored every state_flush_seconds: an agent removed sooner than a
        # few of those after its last signal could have that signal replayed after a crash and
        # applied again to a fresh state.
        if 0 < self.agent_ttl_seconds < 3 * self.state_flush_seconds:
            raise ValueError(
                f"agent_ttl_days is {self.agent_ttl_seconds:.1f} s: set 0 (off) or at least "
                f"three state flush intervals ({3 * self.state_flush_seconds:.1f} s)"
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
        """Settings as a dict safe to log: secrets are shown only as set or unset."""
        shown = self.model_dump()
        shown["admin_token"] = "***" if self.admin_token.get_secret_value() else "(unset)"
        shown["state_dir"] = str(self.state_dir)
        return shown
