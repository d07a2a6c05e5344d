"""Records of the internal topics: ticks (which move a partition's clock and make windows due) and
operator commands (reinstatements). Like signals, handled synchronously and without I/O; and, unlike
signals, written by the worker fleet itself, so a record that is malformed, forged or from a broken
clock is refused, counted and logged (rate-limited), never fatal.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from streams.messages import read_command
from streams.processing.closing import PartitionClock, PartitionSchedule, decode_tick, tick_refusal
from streams.processing.durability import Outbox
from streams.processing.intake import Rejection
from streams.scoring.agent import apply_reinstatement
from streams.state.store import PartitionStates

if TYPE_CHECKING:
    from streams.processing.handlers import RecordHandlers

log = logging.getLogger(__name__)

#: A kind of refused internal record is logged at most once per this many seconds.
REFUSAL_LOG_INTERVAL_SECONDS = 10.0


class ControlRecords:
    def __init__(self, handlers: RecordHandlers) -> None:
        self.names = handlers.names
        self.windows = handlers.windows
        self.intake = handlers.intake
        self.counters = handlers.counters
        self.now_ms = handlers.now_ms
        self.tick_tolerance_ms = handlers.tick_tolerance_ms
        self.dead_letter = handlers.dead_letter
        self._handlers = handlers
        self._last_refusal_logged: dict[tuple[str, str], float] = {}

    def on_tick(
        self,
        message: Any,
        states: PartitionStates,
        schedule: PartitionSchedule,
        clock: PartitionClock,
        outbox: Outbox,
    ) -> bool:
        offset = message.offset
        partition = message.partition
        if offset <= clock.last_tick_offset:
            # Applied before, and redelivered after a crash: what it closed was re-published
            # when the partition was taken over (streams.processing.republishing).
            return False
        tick_ms = decode_tick(message.value)
        now_ms = self.now_ms()
        refusal = tick_refusal(tick_ms, now_ms, self.tick_tolerance_ms)
        if refusal is not None:
            # Behind: stale (a backlog of ticks after a stop), harmless and expected. Otherwise
            # malformed or ahead: forged, or a host with a broken clock.
            stale = tick_ms is not None and tick_ms < now_ms
            self._refuse_internal(message, "stale" if stale else "refused", refusal)
            return False
        assert tick_ms is not None
        self.counters.ticks += 1
        self.counters.tick_lag_ms = now_ms - tick_ms
        schedule.take_closed_by(offset)
        clock.last_tick_offset = offset
        if self._handlers.idle(partition):
            # Nothing left to read on any signal topic of the partition: the wall clock moves
            # stream time on, so that windows close when no signal comes. Less the merge wait,
            # the time a signal may take to arrive after its timestamp: stream time never passes
            # a signal still on its way, so an idle stretch closes windows as a backlog would.
            clock.time_ms = max(clock.time_ms, tick_ms - self._handlers.merge_wait_ms)
        windows = self.windows
        clock_ms = clock.time_ms
        # Closed in turns once this batch is written (streams.processing.windowclosing).
        schedule.pending.extend(schedule.take_due(lambda start: windows.is_closed(start, clock_ms)))
        return True

    def on_command(self, message: Any, states: PartitionStates, outbox: Outbox) -> None:
        command = read_command(message.value, message.partition, self.intake.partition_of)
        if isinstance(command, str):
            self._refuse_internal(message, "refused", command)
            self.dead_letter(message, Rejection("invalid_command", command), outbox)
            return
        key: bytes = command.agent_did.encode()
        state = states.get(key)
        if state is None:
            reason = f"reinstate {command.agent_did}: unknown agent (no state is created for it)"
            self._refuse_internal(message, "refused", reason)
            self.dead_letter(message, Rejection("invalid_command", reason), outbox)
            return
        republishing = self._handlers.republishing
        partition = message.partition
        if message.offset > state.applied_command_offset:  # it changes the state: not read before
            republishing.before_change(partition, key, state, outbox)
        outcome = apply_reinstatement(
            command.agent_did,
            state,
            message.offset,
            self.now_ms(),
            command.requested_by,
            command.reason,
            command.request_id,
        )
        if outcome.refused is not None:
            states.mark_dirty(key)  # the command's offset is recorded as applied
            log.warning("Reinstate %s refused: %s", command.agent_did, outcome.refused)
            return
        reinstatement = outcome.reinstatement or outcome.republish
        if reinstatement is None or (outcome.republish is not None and state.revoked):
            # Read again once the agent was revoked anew: it went out before that revocation
            # (confirmed before that was stored, or re-published with it: see
            # Republishing.revoking), and published now it would say the agent is reinstated.
            return
        states.mark_dirty(key)
        republishing.reinstated(partition, key)
        if outcome.republish is not None:
            # Its state stored, its outputs maybe not: the revocation it lifts goes first.
            republishing.lifted_revocation(
                partition, key, state, reinstatement.lifted_revocation_id, outbox
            )
        log.info(
            "Reinstated %s by %s: %s",
            command.agent_did,
            reinstatement.requested_by,
            reinstatement.reason,
        )
        self._handlers.publish.reinstatement(
            command.agent_did, key, reinstatement, partition, outbox
        )

    def _refuse_internal(self, message: Any, kind: str, reason: str) -> None:
        """Count an ignored record of an internal topic, and log it (at most once per topic and
        kind every ten seconds: a flood of forged records must not become a flood of logs)."""
        counted = (message.topic, kind)
        self.counters.internal_rejected[counted] += 1
        now = time.monotonic()
        if now - self._last_refusal_logged.get(counted, -1e9) >= REFUSAL_LOG_INTERVAL_SECONDS:
            self._last_refusal_logged[counted] = now
            log.log(
                logging.INFO if kind == "stale" else logging.ERROR,
                "Ignoring a record at %s[%d]@%d: %s (%d %s so far)",
                message.topic,
                message.partition,
                message.offset,
                reason,
                self.counters.internal_rejected[counted],
                kind,
            )
