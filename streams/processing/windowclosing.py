"""Closing the windows found due, in turns with the signal batches.

Why turns: at a window's end every agent active in it is due at once (tens of thousands), and
closing them in one go would hold every signal behind it, a revocation with them. So closing
takes the worker's turn for a slice of time, about as long as a signal batch takes its own (so
that under load both share the worker evenly), then lets the signals in. Its outputs are
confirmed outside the turn: waiting for Kafka needs no turn, and signals are applied meanwhile.

Closing later than the tick changes nothing in the result: a window is closed as of its end,
and until it is closed its agent's later signals are kept apart from it (see apply_signal).
Pending closes survive a crash too: their windows are still open in the stored states, and the
rebuilt schedule finds them due.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from streams.processing.durability import Durability, Outbox
from streams.processing.handlers import RecordHandlers
from streams.scoring.model import ScoringConfig
from streams.state.store import PartitionStates

#: Longest one tick batch spends closing windows: what is left stays pending for the next tick
#: (a quarter of a second later), so a worker asked to stop is never held for the closes of a
#: million agents.
CLOSE_BUDGET_SECONDS = 1.0
#: Longest turn closing takes at once, however long signal batches take theirs: a critical
#: signal fetched meanwhile waits for it (measured: 50 ms turns, with their outputs confirmed
#: inside them, held revocations for over a second at half load).
CLOSE_TURN_MAX_SECONDS = 0.02
#: No signal turn for this long: signals are not flowing, and closing takes its longest turns.
SIGNALS_IDLE_SECONDS = 0.1
#: Agents closed between two looks at the clock.
CLOSE_STRIDE = 32
#: Until measured: seconds to encode and send the state behind one closing output (a light
#: state's).
INITIAL_SEND_SECONDS_PER_AGENT = 20e-6
#: Weight of the latest turn in the running estimate of that cost.
SEND_COST_WEIGHT = 0.2


class WindowClosing:
    def __init__(
        self,
        *,
        handlers: RecordHandlers,
        durability: Durability,
        turn: asyncio.Lock,
        config: Callable[[], ScoringConfig],
        min_turn_seconds: float,
    ) -> None:
        self.handlers = handlers
        self.durability = durability
        self._turn = turn
        self.config = config
        self.min_turn_seconds = min_turn_seconds
        #: How long the last signal batch held the turn, and when it ended (perf_counter
        #: seconds): the pipeline sets both.
        self.signal_turn_seconds = 0.0
        self.signal_turn_ended = 0.0
        #: Running estimate of the seconds it takes to encode and send the state behind one
        #: closing output, which the turn does after closing (see _close_turn).
        self.send_seconds_per_agent = INITIAL_SEND_SECONDS_PER_AGENT

    async def close_due(self, partitions: set[int]) -> None:
        """Close the windows found due in ``partitions``, a turn at a time, their outputs
        confirmed before returning (a tick is committed after: see ScoringPipeline).

        A turn's outputs are confirmed while the next turn closes: waiting for Kafka after each
        turn left the worker idle meanwhile whenever no signal batch was waiting. Each turn's
        outputs are sent only once the previous turn's are confirmed, so they reach their topics
        in the order they were closed."""
        schedules = self.handlers.schedules
        deadline = time.perf_counter() + CLOSE_BUDGET_SECONDS
        delivering: asyncio.Task[None] | None = None
        #: Outboxes whose states are sent and whose delivery has not ended.
        unsent: list[Outbox] = []
        try:
            while time.perf_counter() < deadline and any(
                schedules[p].pending for p in partitions if p in schedules
            ):
                async with self._turn:
                    outbox = await self._close_turn(partitions)
                unsent.append(outbox)
                if delivering is not None:
                    await delivering
                    del unsent[0]
                delivering = asyncio.ensure_future(self._deliver(outbox))
                await asyncio.sleep(0)
            if delivering is not None:
                await delivering
                unsent.clear()
        finally:
            if delivering is not None and not delivering.done():
                delivering.cancel()
            # Stopped (cancelled) with states stored that name outputs never confirmed: the
            # worker fails rather than store anything that could hide them.
            for outbox in unsent:
                self.durability.abandon(outbox, asyncio.CancelledError("window closing stopped"))

    async def _deliver(self, outbox: Outbox) -> None:
        try:
            await self.durability.deliver(outbox)
        except BaseException as exc:
            self.durability.fail(exc)
            raise

    def windows_due(self) -> bool:
        """Some agent has a window due and not closed yet: closing is under way, or waits for
        the next tick to go on."""
        return any(schedule.pending for schedule in self.handlers.schedules.values())

    def turn_seconds(self) -> float:
        """As long as the last signal batch's turn, within bounds; the longest when no signal
        turn has run for a while (nothing waits for the worker, and each turn costs its own
        sending and confirming: measured, 10,000 windows closed after their signals stopped
        were published 770 ms after their end plus grace at p99 in 5 ms turns, 440 ms in these
        longest turns). A fixed short turn starved closing: at 15,000 signals/s over 100,000
        agents it fell behind by more than half, and open windows piled up in the states."""
        if time.perf_counter() - self.signal_turn_ended > SIGNALS_IDLE_SECONDS:
            return CLOSE_TURN_MAX_SECONDS
        return min(CLOSE_TURN_MAX_SECONDS, max(self.min_turn_seconds, self.signal_turn_seconds))

    async def _close_turn(self, partitions: set[int]) -> Outbox:
        """Close what one turn allows; the states behind the outputs sent to the changelog."""
        outbox = Outbox()
        handlers = self.handlers
        try:
            # The turn ends with the closed agents' states encoded and sent, which costs about
            # as much again as closing them (measured: 45 ms turns for a 20 ms budget), so
            # closing stops where that cost, estimated, would take the turn past its budget.
            deadline = time.perf_counter() + self.turn_seconds()
            send_cost = self.send_seconds_per_agent
            outputs = outbox.ordered
            config = self.config()
            for partition, schedule in list(handlers.schedules.items()):
                if partition not in partitions:
                    continue
                clock = handlers.clock_for(partition)
                states = PartitionStates(handlers.store, partition)
                pending = schedule.pending
                while pending and time.perf_counter() + len(outputs) * send_cost < deadline:
                    for _ in range(min(CLOSE_STRIDE, len(pending))):
                        handlers.close_agent(
                            pending.popleft(), partition, states, clock, config, outbox
                        )
                states.stage_changes()
            sending = time.perf_counter()
            await self.durability.send_states(outbox)
            self._learn_send_cost(time.perf_counter() - sending, len(outbox.ordered))
        except BaseException as exc:
            self.durability.fail(exc)
            raise
        return outbox

    def _learn_send_cost(self, seconds: float, outputs: int) -> None:
        if outputs:
            self.send_seconds_per_agent += SEND_COST_WEIGHT * (
                seconds / outputs - self.send_seconds_per_agent
            )
