"""How many signals one turn applies: as many as fit in a few milliseconds, by measured cost.

Why short turns: a turn holds the event loop, and everything else the worker does waits for it
between two turns: handing fetched records over and sending the next fetch, confirming the
changelog, publishing outputs. A critical signal's revocation goes through several of those steps
(fetched, read into the merge, applied ahead, its state confirmed, the revocation sent), so it
waits for a turn at each. Measured at half load (22,600 signals/s, the worker at 80-87% of a
core), in alternating runs of a fixed count per turn: up to 2,000 signals (50-65 ms a turn under
a backlog) gave a revocation p99 of 196-221 ms, 100 (about 3 ms) 84-191 ms (median 110 over six
runs), 50 118-187 ms (each turn's own cost then outweighs the shorter wait).

Except when catching up: once the signals applied are more than ``CATCH_UP_SECONDS`` older than
the clock (a backlog after an outage, a redeploy, a replay), a turn takes a whole batch again.
Each turn has a cost of its own (reading, merging, confirming), and short turns cost a backlog
drain about 30% of its rate (measured: 38,500-44,300 signals/s against 57,100-60,200); a
revocation is late by the backlog anyway, and is read sooner the sooner that is drained. A
producer that stamps its signals long ago can put the worker in that mode for the turns whose
last signal is one of its own: it then takes whole batches, as it always did before turns were
timed, and nothing but the latency changes.

Why timed rather than counted: what a signal costs depends on its agent's state (a fresh agent's
is a fraction of one with full recent values) and on the machine, so a count right for one
load is too long or too short for another.
"""

from __future__ import annotations

#: Time one turn spends applying released signals, estimated from the measured cost per signal.
SIGNAL_TURN_SECONDS = 0.003
#: A turn applies at least this many, however costly they have been: below it each turn's fixed
#: cost (fetching, merging, confirming) would take most of the worker.
MIN_TURN_SIGNALS = 32
#: Until measured: seconds to apply one signal (an agent with full recent values, live).
INITIAL_SECONDS_PER_SIGNAL = 30e-6
#: Weight of the latest turn in the running estimate.
COST_WEIGHT = 0.2
#: How far behind the clock the last signal applied may be before turns take whole batches.
CATCH_UP_SECONDS = 2.0


class SignalTurnBudget:
    """A running estimate of the seconds per applied signal, and the count it allows a turn."""

    def __init__(self, most: int, seconds: float = SIGNAL_TURN_SECONDS) -> None:
        if most < 1:
            raise ValueError("a turn must be allowed at least one signal")
        #: Never more than this per turn (the configured batch size).
        self.most = most
        self.seconds = seconds
        self.seconds_per_signal = INITIAL_SECONDS_PER_SIGNAL
        #: Whether the last turn's signals were long past (see CATCH_UP_SECONDS).
        self.catching_up = False

    def signals(self) -> int:
        """How many signals the next turn may apply."""
        if self.catching_up:
            return self.most
        fitting = int(self.seconds / self.seconds_per_signal)
        return max(min(MIN_TURN_SIGNALS, self.most), min(self.most, fitting))

    def observe(self, count: int, seconds: float, behind_seconds: float) -> None:
        """A turn applied ``count`` signals in ``seconds`` (the applying alone, not the waits),
        the last of them ``behind_seconds`` older than the clock."""
        self.catching_up = behind_seconds > CATCH_UP_SECONDS
        if count <= 0 or seconds <= 0:
            return
        self.seconds_per_signal += COST_WEIGHT * (seconds / count - self.seconds_per_signal)
