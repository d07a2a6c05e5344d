"""What a batch publishes, put in its outbox: dead letters, score updates and revocations.

The messages are built from the records the agent's state keeps, so that a re-published output
is byte-identical to the first (see :mod:`streams.processing.outputs`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from streams.kafka.delivery import Outgoing
from streams.kafka.topics import TopicNames
from streams.processing.durability import Outbox
from streams.processing.intake import Rejection, dead_letter
from streams.processing.outputs import (
    reinstatement_message,
    revocation_message,
    score_update_message,
)
from streams.scoring.agent import CloseOutcome, Reinstatement, Revocation, ScoreUpdate
from streams.scoring.windows import WindowPolicy

if TYPE_CHECKING:
    from streams.processing.handlers import PipelineCounters

log = logging.getLogger(__name__)


class Publications:
    def __init__(
        self,
        names: TopicNames,
        windows: WindowPolicy,
        counters: PipelineCounters,
        now_ms: Callable[[], int],
        dead_letter_kept_bytes: int,
    ) -> None:
        self.names = names
        self.windows = windows
        self.counters = counters
        self.now_ms = now_ms
        self.dead_letter_kept_bytes = dead_letter_kept_bytes

    def dead_letter(self, message: Any, rejection: Rejection, outbox: Outbox) -> None:
        self.counters.dead_letters += 1
        log.debug(
            "Dead letter %s[%d]@%d: %s",
            message.topic,
            message.partition,
            message.offset,
            rejection.message,
        )
        # Keyed like the original when that key is short (so a producer's dead letters stay
        # together), never with an oversized key: the dead letter must always fit.
        key = message.key if message.key is not None and len(message.key) <= 1024 else None
        outbox.dead_letters.append(
            Outgoing(
                self.names.deadletter,
                key,
                dead_letter(
                    message.topic,
                    message.partition,
                    message.offset,
                    message.key,
                    message.value,
                    message.timestamp,
                    rejection,
                    self.now_ms(),
                    self.dead_letter_kept_bytes,
                ),
                message.partition,
            )
        )

    def closes(
        self, agent_did: str, key: bytes, closed: CloseOutcome, partition: int, outbox: Outbox
    ) -> None:
        self.updates(agent_did, key, closed.updates, partition, outbox)
        if closed.revocation is not None:
            self.revocation(agent_did, key, closed.revocation, partition, outbox)

    def updates(
        self,
        agent_did: str,
        key: bytes,
        updates: Iterable[ScoreUpdate],
        partition: int,
        outbox: Outbox,
    ) -> None:
        for update in updates:
            outbox.add(
                Outgoing(self.names.scores, key, score_update_message(agent_did, update), partition)
            )

    def revocation(
        self, agent_did: str, key: bytes, revocation: Revocation, partition: int, outbox: Outbox
    ) -> None:
        """A new revocation (counted and logged)."""
        self.counters.revocations += 1
        log.info("Revoking %s: %s", agent_did, revocation.reason)
        self.revocation_again(agent_did, key, revocation, partition, outbox)

    def revocation_again(
        self, agent_did: str, key: bytes, revocation: Revocation, partition: int, outbox: Outbox
    ) -> None:
        """A revocation as recorded (new, or published again from its record)."""
        message = revocation_message(
            agent_did, revocation, self.names.signals, self.windows.size_ms
        )
        outbox.add(Outgoing(self.names.revocations, key, message, partition))

    def reinstatement(
        self,
        agent_did: str,
        key: bytes,
        reinstatement: Reinstatement,
        partition: int,
        outbox: Outbox,
    ) -> None:
        message = reinstatement_message(agent_did, reinstatement)
        outbox.add(Outgoing(self.names.revocations, key, message, partition))
