"""Topic names, derived from one prefix, shared by the worker, the tools and the tests."""

from __future__ import annotations

from dataclasses import dataclass

from streams.scoring.model import DIMENSIONS


@dataclass(frozen=True, slots=True)
class TopicNames:
    prefix: str

    @property
    def signals(self) -> tuple[str, ...]:
        """One signal topic per dimension, in dimension order (index = dimension index)."""
        return tuple(f"{self.prefix}signals.{d.value}" for d in DIMENSIONS)

    @property
    def scores(self) -> str:
        return f"{self.prefix}trust.scores"

    @property
    def revocations(self) -> str:
        return f"{self.prefix}trust.revocations"

    @property
    def deadletter(self) -> str:
        return f"{self.prefix}signals.deadletter"

    @property
    def config(self) -> str:
        """One partition, every record kept: every worker reads every configuration update."""
        return f"{self.prefix}trust.config"

    @property
    def ticks(self) -> str:
        """Internal: the worker's own clock, one record per partition per tick (see closing.py)."""
        return f"{self.prefix}trust.internal.ticks"

    @property
    def commands(self) -> str:
        """Internal: operator commands about one agent (reinstate), keyed and partitioned by DID."""
        return f"{self.prefix}trust.internal.commands"

    @property
    def agent_state(self) -> str:
        """Internal, compacted: the agent-state changelog (see statestore.py)."""
        return f"{self.prefix}trust.internal.agent-state"

    @property
    def all(self) -> tuple[str, ...]:
        """Every topic the service creates."""
        return (*self.copartitioned, self.deadletter, self.config)

    @property
    def copartitioned(self) -> tuple[str, ...]:
        """Topics that must share one partition count: an agent lives on one partition number."""
        return (
            *self.signals,
            self.ticks,
            self.commands,
            self.scores,
            self.revocations,
            self.agent_state,
        )
