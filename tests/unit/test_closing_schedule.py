"""The queue of window closes a worker owes: each agent once, oldest first."""

from __future__ import annotations

from streams.processing.closing import PartitionSchedule, PendingCloses
from streams.scoring.agent import AgentState, WindowTally
from tests.benchmarks.soakfigures import Sample, cpu_share


def test_an_agent_due_for_several_windows_is_queued_once_in_its_first_place() -> None:
    pending = PendingCloses()
    pending.extend([b"a", b"b"])
    pending.extend([b"c", b"a"])  # a's next window, found due by a later tick
    assert list(pending) == [b"a", b"b", b"c"] and len(pending) == 3
    assert pending.popleft() == b"a"
    pending.extend([b"a"])  # due again after it was closed: queued anew, at the end
    assert list(pending) == [b"b", b"c", b"a"]
    pending.discard({b"c", b"x"})
    assert [pending.popleft(), pending.popleft()] == [b"b", b"a"] and not pending


def test_the_schedule_hands_out_each_due_agent_once_however_many_windows_it_has() -> None:
    schedule = PartitionSchedule()
    state = AgentState()
    for start in (0, 30_000, 60_000):
        state.open_windows[start] = WindowTally()
    schedule.track(b"did:x:1", state)
    schedule.pending.extend(schedule.take_due(lambda start: start <= 30_000))
    schedule.pending.extend(schedule.take_due(lambda start: start <= 60_000))
    assert list(schedule.pending) == [b"did:x:1"]


def test_the_soak_reads_cpu_use_over_the_last_third() -> None:
    samples = [Sample(float(t), 100.0, 0.0, None, None, cpu_s=t * 0.4) for t in range(0, 91, 10)]
    assert cpu_share(samples, 90.0) == 0.4
    assert cpu_share([Sample(0.0, 1.0, 0.0, None, None)], 90.0) is None
