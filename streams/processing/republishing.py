"""Outputs recorded before a partition was taken over, re-published before anything can hide them.

An agent's state records what its last close published (and which tick or signal closed it) and
its revocation. The state is confirmed before those outputs are sent, so after a crash they may be
missing from Kafka while the state says they were made: they are published again, byte for byte,
from that record. The record names only the last close, though: once it changes, nothing names the
earlier outputs. So a record stored before the partition was taken over is re-published before it
can change:

- The closes of the last tick applied: in the partition's first batch, before anything else (a
  redelivered tick is ignored), unless the stored clock says they were confirmed (a clean
  hand-over). The closes of earlier ticks were confirmed before the next tick was applied.
- A close or revocation by a signal not read again since the take-over: when that signal is read
  again (its redelivery finds it recorded, see ``apply_signal``), or before anything else changes
  the record, whichever comes first. Either can: commands and signals are read by different
  consumers, and a topic that stalls lets later signals (and the ticks' closes they make due) go
  first.
- A reinstatement: when its command is read again, after the revocation it lifts (whatever caused
  it); or before a newer revocation of the agent, which the command read again afterwards would
  not publish it after.

In the worker's own run a record changes only once its outputs are confirmed
(:meth:`~streams.processing.durability.Durability.send_states`), or in the batch that publishes
them (whose stored state then names them all), so nothing here fires but after a take-over; a
record stored before it may go out twice, always as the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from streams.processing.closing import PartitionClock, PartitionSchedule
from streams.processing.durability import Outbox
from streams.processing.publishing import Publications
from streams.scoring.agent import (
    AgentState,
    CloseOutcome,
    Revocation,
    ScoreUpdate,
    SignalTrigger,
    revoked_by_close,
)
from streams.state.store import PartitionStates

#: Signals applied ahead kept per partition before those released are dropped.
AHEAD_KEPT = 1024


class Republishing:
    def __init__(self, publish: Publications, positions: Callable[[int], list[int]]) -> None:
        self.publish = publish
        #: Next signal offset to apply per topic (dimension order) of a partition: reading
        #: resumed at the stored ones when it was taken over.
        self.positions = positions
        #: Partitions taken over whose last tick's closes are still to be re-published.
        self.owed: set[int] = set()
        #: Partitions owned whose last tick's closes were re-published.
        self._settled: set[int] = set()
        #: Signals applied ahead of their turn since the take-over, per partition: (dimension,
        #: offset). Read again, though until released their positions say otherwise.
        self._ahead: dict[int, set[tuple[int, int]]] = {}
        #: The size of a partition's set at which it is pruned next.
        self._prune_at: dict[int, int] = {}
        #: Agents whose reinstatement was made, or re-published, since the take-over.
        self._reinstated: dict[int, set[bytes]] = {}

    def taken_over(self, partition: int) -> None:
        self.forget([partition])
        self.owed.add(partition)

    def forget(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            self.owed.discard(partition)
            self._settled.discard(partition)
            self._ahead.pop(partition, None)
            self._prune_at.pop(partition, None)
            self._reinstated.pop(partition, None)

    def settled(self, partition: int) -> bool:
        """Whether the partition's first batch since it was taken over has run (nothing of it
        is owed any more)."""
        return partition in self._settled

    def applied_ahead(self, partition: int, dimension: int, offset: int) -> None:
        ahead = self._ahead.setdefault(partition, set())
        ahead.add((dimension, offset))
        if len(ahead) >= self._prune_at.get(partition, AHEAD_KEPT):
            # Those released since (their positions passed) need not be kept; pruned when the
            # set has doubled, so that each signal costs a constant share of the pruning.
            positions = self.positions(partition)
            ahead.difference_update([(d, o) for d, o in ahead if o < positions[d]])
            self._prune_at[partition] = max(AHEAD_KEPT, 2 * len(ahead))

    def unread(self, partition: int, dimension: int, offset: int) -> bool:
        """Whether that signal has not been read again since the partition was taken over."""
        if offset < self.positions(partition)[dimension]:
            return False  # released since
        return (dimension, offset) not in self._ahead.get(partition, ())

    def owed_closes(
        self,
        partition: int,
        states: PartitionStates,
        schedule: PartitionSchedule,
        clock: PartitionClock,
        outbox: Outbox,
    ) -> None:
        """In a partition's first batch since it was taken over: its last tick's closes, unless
        the clock says they were confirmed (a partition handed over cleanly)."""
        if partition in self.owed:
            self.owed.discard(partition)
            self._settled.add(partition)
            if clock.last_tick_offset > clock.closes_confirmed:
                for key in schedule.take_closed_by(clock.last_tick_offset):
                    state = states.get(key)
                    if state is not None and state.last_close_tick == clock.last_tick_offset:
                        states.mark_dirty(key)
                        self._closes(partition, key, state, outbox)

    def before_change(
        self, partition: int, key: bytes, state: AgentState, outbox: Outbox
    ) -> tuple[ScoreUpdate, ...] | None:
        """Called before the agent's record may change (a close, a revocation, a reinstatement):
        re-publish what the record names if its signal was not read again since the take-over.
        Returns the updates the changed record must name as well: those this batch publishes
        already (None if it publishes nothing of the agent's)."""
        if key not in outbox.agents:
            close = state.last_close_signal
            if close is not None and self.unread(partition, *close):
                self._closes(partition, key, state, outbox)
            if state.revoked:
                self._unread_revocation(partition, key, state, outbox)
        return state.last_updates if key in outbox.agents else None

    def after_change(
        self,
        partition: int,
        key: bytes,
        state: AgentState,
        earlier: tuple[ScoreUpdate, ...] | None,
        closed: CloseOutcome | None,
        revocation: Revocation | None,
        outbox: Outbox,
    ) -> None:
        """After a change :meth:`before_change` was called for (``earlier``: what it returned),
        with the windows it ``closed`` and the ``revocation`` it made."""
        if closed is not None and closed.updates and earlier:
            # The state stored with this batch's outputs names only its last close, the one its
            # trigger, read again, re-publishes: it must name the updates this batch published
            # before it too (a few more, only in such a batch).
            state.last_updates = earlier + state.last_updates
        if revocation is not None or (closed is not None and closed.revocation is not None):
            self.revoking(partition, key, state, outbox)

    def reinstated(self, partition: int, key: bytes) -> None:
        """The agent's reinstatement was just made, or re-published."""
        self._reinstated.setdefault(partition, set()).add(key)

    def revoking(self, partition: int, key: bytes, state: AgentState, outbox: Outbox) -> None:
        """Before a new revocation of the agent is published: its reinstatement, if stored
        before the take-over (maybe never confirmed). Its command, read again afterwards, finds
        the agent revoked again and publishes nothing: the reinstatement goes out here, first."""
        reinstatement = state.reinstatement
        if reinstatement is not None and key not in self._reinstated.get(partition, ()):
            self.reinstated(partition, key)
            self.publish.reinstatement(key.decode(), key, reinstatement, partition, outbox)

    def _unread_revocation(
        self, partition: int, key: bytes, state: AgentState, outbox: Outbox
    ) -> None:
        """The agent's revocation, if by a signal not read again since the take-over."""
        revocation = state.revocation
        if revocation is not None and isinstance(revocation.trigger, SignalTrigger):
            trigger = revocation.trigger
            if self.unread(partition, trigger.dimension, trigger.offset):
                self._revocation(partition, key, revocation, outbox)

    def lifted_revocation(
        self, partition: int, key: bytes, state: AgentState, lifted_id: str, outbox: Outbox
    ) -> None:
        """Before a reinstatement re-published after a crash: the revocation it lifts, whatever
        caused it (stored with the reinstatement, it may have been re-published in the batch
        that died; nothing else names it any more)."""
        revocation = state.revocation
        if revocation is not None and revocation.revocation_id == lifted_id:
            self._revocation(partition, key, revocation, outbox)

    def _closes(self, partition: int, key: bytes, state: AgentState, outbox: Outbox) -> None:
        self.publish.counters.updates_republished += len(state.last_updates)
        self.publish.updates(key.decode(), key, state.last_updates, partition, outbox)
        revocation = revoked_by_close(state)
        if revocation is not None:
            self._revocation(partition, key, revocation, outbox)

    def _revocation(
        self, partition: int, key: bytes, revocation: Revocation, outbox: Outbox
    ) -> None:
        self.publish.revocation_again(key.decode(), key, revocation, partition, outbox)
