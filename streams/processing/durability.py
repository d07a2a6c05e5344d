"""The durability protocol, in one place: what must be stored before what, and what a failure does.

Each step waits until Kafka has confirmed the one before:

1. **The states behind outputs.** Before a score update, revocation or reinstatement record is
   sent, the agent state that records it goes to the changelog and is confirmed. A crash after
   this re-publishes the output byte for byte from that record: the signal that caused it when
   it is read again; a tick's closes when the partition is taken over. A crash before it replays
   a trigger that has left no trace.
2. **The outputs** (and dead letters), confirmed; retried in order until Kafka has them. A batch
   of records ends only here, so Faust commits a tick's or command's offset only after it.
3. **Every other changed state** (:meth:`Durability.checkpoint`: every state flush interval,
   and before a partition is given up), confirmed.
4. **Progress**: the signal positions and partition clocks, written after the states they cover
   and confirmed. Only now has progress moved: a restart, or the next owner of the partition,
   resumes from the last progress stored, and everything after it is read again.

One agent's outputs go out in the order its states record them: a state that records an output
reaches the changelog only once every earlier output of that agent is confirmed. Why: a replayed
trigger re-publishes what the agent's state says its *last* close (or revocation) published, so a
later close stored while an earlier one's outputs were still on their way would, after a crash,
leave nothing that names the earlier ones (window closes are confirmed outside the turn, while
signal batches, a critical signal closing that agent's next window among them, go on). The cost:
a batch changing such an agent waits, holding the turn, for that delivery (milliseconds; while a
topic refuses the outputs, until it takes them).

Underneath, the local database is written only with what the changelog confirmed
(:mod:`streams.state.changelog`), so it never holds state or progress the changelog lacks.

A delivery Kafka refuses is not a failure: it is retried until it succeeds, the worker showing
itself not ready meanwhile (:mod:`streams.kafka.delivery`). Anything else that breaks a step latches
the failure: the staged states, which may hold half-applied changes, are forgotten, every later step
refuses to run, so no progress is stored past what was lost, and the worker stops; a restart replays
from the last progress stored.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from streams.errors import TrustServiceError
from streams.kafka.delivery import Delivery, Outgoing
from streams.state.store import CLOCK_KEY, StateStore

#: Agents written per turn by a checkpoint. Agents with full histories take about 35 us each
#: to encode and queue, so a slice holds the turn (and a critical signal) for a few ms, and its
#: changelog request, which a revocation's state waits behind, stays small.
CHECKPOINT_SLICE = 100


class PipelineFailed(TrustServiceError, RuntimeError):
    """A batch failed part-way: the worker must stop and replay from its last progress."""


#: An agent, as the changelog keys it: (partition, key).
AgentKey = tuple[int, bytes]


@dataclass(slots=True)
class Outbox:
    """Messages produced by one batch: dead letters, then outputs that record agent states."""

    dead_letters: list[Outgoing] = field(default_factory=list)
    ordered: list[Outgoing] = field(default_factory=list)
    #: Keys of the agents with outputs in ``ordered``.
    agents: set[bytes] = field(default_factory=set)
    #: Set when the states behind ``ordered`` are sent; done once the outputs are confirmed, or
    #: will never be (the worker has failed).
    published: asyncio.Future[None] | None = None
    #: Record timestamps (epoch ms) of the critical signals whose new revocations are in
    #: ``ordered``: their latency is observed once Kafka confirms them.
    revoking_signals_ms: list[int] = field(default_factory=list)

    def add(self, output: Outgoing) -> None:
        """An output that records the state of its agent (``output.key``)."""
        self.ordered.append(output)
        if output.key is not None:
            self.agents.add(output.key)


class Durability:
    def __init__(self, store: StateStore, delivery: Delivery, turn: asyncio.Lock) -> None:
        self.store = store
        self.delivery = delivery
        #: The lock batches take turns with: a checkpoint writes a slice at a time between them.
        self._turn = turn
        self._checkpointing = asyncio.Lock()  # one checkpoint at a time
        #: Set when a batch failed part-way; nothing is stored after it.
        self.failed: BaseException | None = None
        #: Agents with a state in the changelog recording outputs not confirmed yet, each with
        #: its outbox's ``published``: no later state of theirs is sent until it is done.
        self._unpublished: dict[AgentKey, asyncio.Future[None]] = {}
        #: Called with the seconds from each revoking critical signal's record timestamp until
        #: its revocation was confirmed (metrics install it).
        self.observe_revocation: Callable[[float], None] | None = None

    def fail(self, exc: BaseException) -> None:
        """A batch failed part-way: forget every staged change and refuse every later step."""
        if self.failed is None:
            self.failed = exc
        self.store.forget()
        # Whoever waits for outputs that will now never be confirmed finds the failure instead.
        for published in self._unpublished.values():
            if not published.done():
                published.set_result(None)
        self._unpublished.clear()

    def unconfirmed(self, partition: int, key: bytes) -> bool:
        """Whether the agent has outputs sent and not confirmed yet."""
        return (partition, key) in self._unpublished

    def check(self) -> None:
        if self.failed is not None:
            raise PipelineFailed("a batch failed; refusing to persist") from self.failed

    async def commit_outputs(self, outbox: Outbox) -> None:
        """Steps 1 and 2 for one batch: the states its outputs record, then the outputs.

        Only those states, so that a revocation does not wait for a second's worth of other
        agents' states to be encoded."""
        await self.send_states(outbox)
        await self.deliver(outbox)

    async def send_states(self, outbox: Outbox) -> None:
        """Step 1 begun: the states ``outbox`` records, sent to the changelog (the part that
        must see them as the batch left them: called holding the turn), each once its agent's
        earlier outputs are confirmed (see the module's docstring). Every outbox whose states
        are sent must then be delivered (:meth:`deliver`) or abandoned (:meth:`abandon`)."""
        if not outbox.ordered:
            return
        self.check()
        agents = {(o.partition, o.key) for o in outbox.ordered if o.key}
        if self._unpublished:
            await self._after_earlier_outputs(agents)
        await self.store.persist_agents(agents)
        published = outbox.published = asyncio.get_running_loop().create_future()
        for agent in agents:
            self._unpublished[agent] = published

    async def _after_earlier_outputs(self, agents: set[AgentKey]) -> None:
        """Return once no agent of ``agents`` has outputs sent and not confirmed. Rare: an
        agent closed again within a delivery's round trip (held meanwhile: the turn, and the
        signals waiting for it, measured in milliseconds)."""
        while True:
            unpublished = self._unpublished
            earlier = {unpublished[a] for a in agents if a in unpublished}
            if not earlier:
                return
            await asyncio.wait(earlier)
            self.check()

    async def deliver(self, outbox: Outbox) -> None:
        """Step 1 confirmed, then step 2. Needs no turn: what it waits for is sent already, and
        a later batch's outputs wait for their own states the same way."""
        try:
            if outbox.ordered:
                await self.store.confirm()
            if outbox.dead_letters or outbox.ordered:
                await self.delivery.send([*outbox.dead_letters, *outbox.ordered])
        except BaseException as exc:
            self.fail(exc)  # cancelled too: its states say outputs went out that did not
            raise
        self._published(outbox)
        observe = self.observe_revocation
        if observe is not None and outbox.revoking_signals_ms:
            now_s = time.time()
            for signal_ms in outbox.revoking_signals_ms:
                observe(max(0.0, now_s - signal_ms / 1000))

    def abandon(self, outbox: Outbox, exc: BaseException) -> None:
        """``outbox``'s states were sent and its outputs never will be: the worker has failed
        (nothing more may be stored that could hide them; a replay publishes them)."""
        self.fail(exc)
        self._published(outbox)

    def _published(self, outbox: Outbox) -> None:
        published = outbox.published
        if published is None:
            return
        if not published.done():
            published.set_result(None)
        unpublished = self._unpublished
        for o in outbox.ordered:
            if o.key is not None and unpublished.get((o.partition, o.key)) is published:
                del unpublished[o.partition, o.key]

    async def send_clocks(self) -> None:
        """Step 4 for ticks begun: the clocks they moved, sent (called holding the turn: they
        are taken as the ticks left them). Only those: the states of signals staged meanwhile
        do not depend on a tick's commit, and writing them all on every tick would stall
        signals four times a second."""
        self.check()
        await self.store.persist_entries(CLOCK_KEY)

    async def confirm_clocks(self) -> None:
        """Step 4 for ticks ended: the clocks sent are confirmed, before Faust commits the
        ticks. Needs no turn: held while Kafka confirms (behind any checkpoint slice queued
        before the clocks), it kept every signal batch, and every critical signal, waiting
        (measured under load: up to 213 ms)."""
        await self.store.confirm()

    async def checkpoint(self) -> None:
        """Steps 3 and 4: every staged state, then the positions and clocks that say "every
        state before me is stored", each confirmed.

        The states in slices of CHECKPOINT_SLICE agents, letting batches in between: written at
        once, an interval's worth of states holds the worker for a tenth of a second or more,
        and a revocation with it. Each slice waits, outside the turn, until the producer has taken
        the one before: queued all at once, a checkpoint's megabytes went out in back-to-back
        requests, and a revocation's state and its produce waited behind them (measured at 10%
        load: revocation p99 90-110 ms before the changelog queued its writes, 157-170 ms
        after, without this pacing; 50-61 ms with it).
        """
        async with self._checkpointing:
            async with self._turn:
                self.check()
                agents = self.store.begin_persist()
            for partition, keys in agents:
                for start in range(0, len(keys), CHECKPOINT_SLICE):
                    async with self._turn:
                        self.check()
                        await self.store.write_persisting(
                            partition, keys[start : start + CHECKPOINT_SLICE]
                        )
                    await asyncio.sleep(0)
                    await self.store.changelog_room()
            await self.store.confirm()
            async with self._turn:
                self.check()
                await self.store.write_taken_entries()
            await self.store.confirm()
