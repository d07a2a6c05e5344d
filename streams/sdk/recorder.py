"""The ``record_*`` calls, defined once for the async publisher and the synchronous one.

Each call builds its signal with the pure functions of :mod:`streams.sdk.signals` and hands it to
the publisher's ``_record``: the async publisher returns a coroutine that builds and publishes
when awaited, the synchronous one builds in the caller's thread (so :class:`InvalidSignal` is
raised there) and blocks until the record is accepted.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Generic, ParamSpec, Self, TypeVar

from streams.scoring.model import Dimension
from streams.sdk.signals import (
    PreparedSignal,
    collaboration_signal,
    output_quality_signal,
    policy_compliance_signal,
    prepare_signal,
    resource_usage_signal,
    security_event_signal,
)
from streams.settings import Settings

#: What a ``record_*`` call returns: an awaitable (async publisher) or ``None`` (sync publisher).
R = TypeVar("R")
P = ParamSpec("P")


class SignalRecorder(Generic[R]):
    """``record_signal`` and the reference engine's convenience calls, over one ``_record``."""

    def _record(self, build: Callable[P, PreparedSignal], *args: P.args, **kwargs: P.kwargs) -> R:
        """Build a signal with ``build(*args, **kwargs)`` and publish it."""
        raise NotImplementedError

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> Self:
        """A publisher for the brokers, security, topic prefix and size limit the worker is set
        up with (``options`` add to them: ``client_id``, ``linger_ms``, producer options)."""
        # Both publishers take the same constructor arguments.
        build: Callable[..., Self] = cls
        return build(
            settings.kafka_bootstrap_servers,
            topic_prefix=settings.topic_prefix,
            max_message_bytes=settings.max_message_bytes,
            **settings.kafka_security.arguments(),
            **options,
        )

    def record_signal(
        self,
        agent_did: str,
        dimension: Dimension | str,
        value: float,
        source: str,
        *,
        details: str | None = None,
        trace_id: str | None = None,
        signal_id: str | None = None,
        timestamp: datetime | None = None,
    ) -> R:
        """Publish one signal; see :func:`prepare_signal` for what is checked before sending."""
        return self._record(
            prepare_signal,
            agent_did,
            dimension,
            value,
            source,
            details=details,
            trace_id=trace_id,
            signal_id=signal_id,
            timestamp=timestamp,
        )

    def record_policy_compliance(
        self, agent_did: str, compliant: bool, policy_name: str | None = None
    ) -> R:
        """Did the action keep to policy? See :func:`policy_compliance_signal`."""
        return self._record(policy_compliance_signal, agent_did, compliant, policy_name)

    def record_resource_usage(
        self,
        agent_did: str,
        tokens_used: int,
        tokens_budget: int,
        compute_ms: int,
        compute_budget_ms: int,
    ) -> R:
        """Was token and compute use proportionate? See :func:`resource_usage_signal`."""
        return self._record(
            resource_usage_signal,
            agent_did,
            tokens_used,
            tokens_budget,
            compute_ms,
            compute_budget_ms,
        )

    def record_output_quality(
        self, agent_did: str, accepted: bool, consumer: str, rejection_reason: str | None = None
    ) -> R:
        """Did the downstream ``consumer`` accept the output? See :func:`output_quality_signal`."""
        return self._record(output_quality_signal, agent_did, accepted, consumer, rejection_reason)

    def record_security_event(self, agent_did: str, within_boundary: bool, event_type: str) -> R:
        """Did the agent stay within its boundary? See :func:`security_event_signal`."""
        return self._record(security_event_signal, agent_did, within_boundary, event_type)

    def record_collaboration(self, agent_did: str, handoff_successful: bool, peer_did: str) -> R:
        """Did a handoff with ``peer_did`` complete? See :func:`collaboration_signal`."""
        return self._record(collaboration_signal, agent_did, handoff_successful, peer_did)
