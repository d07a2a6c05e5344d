"""A closing turn keeps to its time budget, counting the encoding and sending of the closed
agents' states that ends it: a turn that overran held every signal, a revocation's included,
behind it. Time here is a fake clock that closing and sending advance."""

from __future__ import annotations

import asyncio
from collections import deque
from types import SimpleNamespace
from typing import Any

import pytest

from streams.kafka.delivery import Outgoing
from streams.processing import windowclosing
from streams.processing.durability import Outbox
from streams.processing.windowclosing import CLOSE_STRIDE, CLOSE_TURN_MAX_SECONDS, WindowClosing

CLOSE_SECONDS = 50e-6
SEND_SECONDS = 50e-6


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Handlers:
    """One partition with ``agents`` windows due; closing one costs CLOSE_SECONDS."""

    def __init__(self, clock: FakeClock, agents: int) -> None:
        self.clock = clock
        self.schedules = {0: SimpleNamespace(pending=deque(f"did:a:{i}" for i in range(agents)))}
        self.store = SimpleNamespace(stage=lambda partition, key, state: None)

    def clock_for(self, partition: int) -> object:
        return object()

    def close_agent(
        self, key: str, partition: int, states: Any, clock: Any, config: Any, outbox: Outbox
    ) -> None:
        self.clock.now += CLOSE_SECONDS
        outbox.ordered.append(Outgoing("scores", key.encode(), b"update", partition))


class Durability:
    """Encoding and sending a closed agent's state costs SEND_SECONDS."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock

    async def send_states(self, outbox: Outbox) -> None:
        self.clock.now += SEND_SECONDS * len(outbox.ordered)

    async def deliver(self, outbox: Outbox) -> None:
        pass

    def fail(self, exc: BaseException) -> None:
        raise AssertionError(f"closing failed: {exc!r}")


def closing_for(handlers: Handlers, clock: FakeClock) -> WindowClosing:
    return WindowClosing(
        handlers=handlers,  # type: ignore[arg-type]
        durability=Durability(clock),  # type: ignore[arg-type]
        turn=asyncio.Lock(),
        config=lambda: None,  # type: ignore[arg-type,return-value]
        min_turn_seconds=CLOSE_TURN_MAX_SECONDS,
    )


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(windowclosing.time, "perf_counter", fake)
    return fake


async def test_a_closing_turn_counts_the_sending_of_its_states_in_its_budget(
    clock: FakeClock,
) -> None:
    handlers = Handlers(clock, agents=20_000)
    closing = closing_for(handlers, clock)
    turns = []
    for _ in range(30):
        started = clock.now
        outbox = await closing._close_turn({0})
        turns.append((clock.now - started, len(outbox.ordered)))
    # Once the sending cost is learnt, each turn closes about as many agents as closing and
    # sending both fit in the budget (not as many as closing alone fits), within one stride.
    for seconds, closed in turns[-10:]:
        assert seconds <= CLOSE_TURN_MAX_SECONDS + CLOSE_STRIDE * (CLOSE_SECONDS + SEND_SECONDS)
        assert closed >= CLOSE_TURN_MAX_SECONDS / (CLOSE_SECONDS + SEND_SECONDS) - CLOSE_STRIDE
    assert closing.send_seconds_per_agent == pytest.approx(SEND_SECONDS, rel=0.01)
    # Before anything was learnt, the first turn overran by the sending it had not counted.
    assert turns[0][0] > CLOSE_TURN_MAX_SECONDS * 1.3


async def test_windows_are_due_until_every_pending_close_is_done(clock: FakeClock) -> None:
    """What the fleet-wide views hold back for (streams.web.scan): true from a window's end
    until the last agent due is closed, over as many turns as that takes."""
    handlers = Handlers(clock, agents=1_000)
    handlers.schedules[1] = SimpleNamespace(pending=deque())
    closing = closing_for(handlers, clock)
    turns = 0
    while closing.windows_due():
        await closing._close_turn({0, 1})
        turns += 1
    assert turns > 1 and not handlers.schedules[0].pending


def test_closing_turns_follow_signal_turns_and_take_their_longest_when_signals_stop(
    clock: FakeClock,
) -> None:
    closing = closing_for(Handlers(clock, agents=10), clock)
    closing.min_turn_seconds = 0.005
    clock.now = 100.0
    closing.signal_turn_seconds, closing.signal_turn_ended = 0.003, clock.now
    assert closing.turn_seconds() == 0.005  # signals flowing: as short as allowed
    closing.signal_turn_seconds = 0.012
    assert closing.turn_seconds() == 0.012  # as long as the last signal turn
    clock.now += windowclosing.SIGNALS_IDLE_SECONDS * 2
    assert closing.turn_seconds() == CLOSE_TURN_MAX_SECONDS  # nothing waits for the worker
