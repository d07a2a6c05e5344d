"""Records after a hole in a partition's offsets are held back and the partition is rewound."""

from __future__ import annotations

from dataclasses import dataclass

from streams.processing.gaps import OffsetGuard


@dataclass
class Message:
    topic: str
    partition: int
    offset: int


@dataclass
class Event:
    message: Message


def events(topic: str, partition: int, offsets: list[int]) -> list[Event]:
    return [Event(Message(topic, partition, o)) for o in offsets]


async def _never(topic: str, partition: int, offset: int) -> None:
    raise AssertionError("no rewind expected")


def offsets_of(admitted: list[Event]) -> list[int]:
    return [e.message.offset for e in admitted]


def test_contiguous_records_are_all_admitted() -> None:
    guard = OffsetGuard(_never)
    admitted, holes = guard.admit(events("s", 0, [5, 6, 7]) + events("s", 1, [0, 1]))
    assert len(admitted) == 5 and holes == {}


async def test_records_after_a_hole_are_held_back_and_the_partition_rewound() -> None:
    rewinds: list[tuple[str, int, int]] = []

    async def rewind(topic: str, partition: int, offset: int) -> None:
        rewinds.append((topic, partition, offset))

    guard = OffsetGuard(rewind)
    guard.admit(events("s", 0, [10, 11]))
    admitted, holes = guard.admit(events("s", 0, [15, 16]) + events("s", 1, [3]))
    assert offsets_of(admitted) == [3]  # the other partition is unaffected
    assert holes == {("s", 0): 12}
    await guard.rewind_holes(holes)
    assert rewinds == [("s", 0, 12)]

    # Redelivered in order after the rewind: everything is admitted.
    admitted, holes = guard.admit(events("s", 0, [12, 13, 14, 15, 16]))
    assert offsets_of(admitted) == [12, 13, 14, 15, 16] and holes == {}


def test_a_hole_still_there_after_a_rewind_is_real_and_accepted() -> None:
    guard = OffsetGuard(_never)
    guard.admit(events("s", 0, [1]))
    _, holes = guard.admit(events("s", 0, [3]))  # offset 2 is, say, a transaction marker
    assert holes == {("s", 0): 2}
    admitted, holes = guard.admit(events("s", 0, [3, 4]))
    assert offsets_of(admitted) == [3, 4] and holes == {}


def test_redeliveries_before_the_expected_offset_are_admitted_without_moving_back() -> None:
    guard = OffsetGuard(_never)
    guard.admit(events("s", 0, [1, 2, 3]))
    admitted, holes = guard.admit(events("s", 0, [2, 3, 4]))
    assert offsets_of(admitted) == [2, 3, 4] and holes == {}
    assert guard.expected[("s", 0)] == 5


def test_forgetting_a_partition_accepts_any_next_offset() -> None:
    guard = OffsetGuard(_never)
    guard.admit(events("s", 0, [1]))
    guard.forget({0})
    admitted, holes = guard.admit(events("s", 0, [40]))
    assert offsets_of(admitted) == [40] and holes == {}
