"""The merge of a partition's five signal topics in time order (streams/processing/merge.py)."""

from __future__ import annotations

from streams.processing.intake import AcceptedSignal, Rejection
from streams.processing.merge import Arrived, SignalMerge

NOW = 1_700_000_000_000


def arrived(
    dimension: int,
    offset: int,
    at_ms: int,
    *,
    partition: int = 0,
    arrived_ms: int = NOW,
    rejected: bool = False,
) -> Arrived:
    signal: AcceptedSignal | Rejection = (
        Rejection("invalid_json", "no")
        if rejected
        else AcceptedSignal("did:mesh:a", 0.5, at_ms, None, "test")
    )
    return Arrived(
        f"signals.{dimension}",
        partition,
        offset,
        b"did:mesh:a",
        b"{}",
        at_ms,
        signal,
        -1 if rejected else at_ms,
        dimension,
        arrived_ms,
    )


def order(records: list[Arrived]) -> list[tuple[int, int]]:
    return [(r.dimension, r.offset) for r in records]


def merge(caught_up: bool = True, wait_ms: int = 100, fetch_wait_ms: int = 1_000) -> SignalMerge:
    return SignalMerge(
        5, wait_ms=wait_ms, fetch_wait_ms=fetch_wait_ms, caught_up=lambda _d, _p: caught_up
    )


def test_records_of_the_five_topics_go_in_time_order_ties_by_dimension_then_offset() -> None:
    m = merge()
    old = NOW - 60_000  # a backlog: long past any wait
    m.add([arrived(0, 0, old + 30), arrived(0, 1, old + 40), arrived(0, 2, old + 40)])
    m.add([arrived(3, 0, old + 10), arrived(3, 1, old + 40)])
    m.add([arrived(1, 0, old + 40)])
    m.add([arrived(2, 0, old + 20), arrived(4, 0, old + 50)])
    assert order(m.release(NOW)) == [(3, 0), (2, 0), (0, 0), (0, 1), (0, 2), (1, 0), (3, 1), (4, 0)]
    assert m.next_release_ms is None and m.held() == 0


def test_within_a_topic_offset_order_stands_whatever_the_times() -> None:
    m = merge()
    old = NOW - 60_000
    m.add([arrived(0, 0, old + 50), arrived(0, 1, old + 10)])
    m.add([arrived(1, 0, old + 20)])
    assert order(m.release(NOW)) == [(1, 0), (0, 0), (0, 1)]


def test_a_live_record_waits_for_caught_up_topics_until_its_time_plus_the_wait() -> None:
    m = merge(wait_ms=100)
    m.add([arrived(0, 0, NOW - 30, arrived_ms=NOW)])
    assert m.release(NOW) == []
    assert m.next_release_ms == NOW - 30 + 100
    # An earlier one comes on another topic meanwhile: it goes first.
    m.add([arrived(2, 0, NOW - 50, arrived_ms=NOW + 20)])
    assert m.release(NOW + 20) == []
    assert order(m.release(NOW + 70)) == [(2, 0), (0, 0)]


def test_a_record_goes_at_once_when_every_other_topic_has_a_later_one() -> None:
    m = merge(wait_ms=10_000)
    m.add([arrived(d, i, NOW + 10 * i + d) for d in range(5) for i in range(2)])
    # Once a topic has nothing left, the others' records wait: it may still get one earlier.
    assert order(m.release(NOW)) == [(0, 0), (1, 0), (2, 0), (3, 0), (4, 0), (0, 1)]
    # Stamped after it arrived (a producer clock ahead): waited for from its arrival.
    assert m.held() == 4 and m.next_release_ms == NOW + 10_000


def test_a_topic_not_caught_up_is_waited_for_from_when_it_was_found_empty() -> None:
    m = merge(caught_up=False, fetch_wait_ms=1_000)
    # Arrived long ago (it sat behind others in its queue): that does not shorten the wait.
    m.add([arrived(0, 0, NOW - 60_000, arrived_ms=NOW - 5_000)])
    assert m.release(NOW) == []
    assert m.next_release_ms == NOW + 1_000
    assert m.release(NOW + 999) == []
    assert m.forced == 0
    assert order(m.release(NOW + 1_000)) == [(0, 0)]
    assert m.forced == 1  # one record went ahead of the topics it waited for


def test_records_of_the_empty_topic_reset_its_wait() -> None:
    m = merge(caught_up=False, fetch_wait_ms=1_000)
    m.add([arrived(0, 0, NOW - 60_000)])
    assert m.release(NOW) == []
    m.add([arrived(d, 0, NOW - 50_000) for d in range(1, 5)])
    m.add([arrived(0, 1, NOW - 40_000)])
    # Every topic has a record: they go, until one is empty again, and is waited for anew.
    assert order(m.release(NOW + 10)) == [(0, 0), (1, 0)]
    assert m.next_release_ms == NOW + 10 + 1_000 and m.forced == 0


def test_a_refused_record_goes_as_soon_as_it_is_first_in_its_topic() -> None:
    m = merge(caught_up=False)
    m.add([arrived(3, 0, 0, rejected=True), arrived(3, 1, NOW - 60_000)])
    assert order(m.release(NOW)) == [(3, 0)]
    assert m.held() == 1


def test_partitions_are_merged_apart() -> None:
    m = merge(caught_up=False)
    m.add([arrived(0, 0, NOW - 60_000, partition=1)])
    m.add([arrived(d, 0, NOW - 60_000 + d, partition=2) for d in range(5)])
    # Partition 1 waits for its four empty topics; partition 2 goes on (until one is empty).
    assert [(r.partition, r.dimension) for r in m.release(NOW)] == [(2, 0)]
    assert not m.idle(1) and not m.idle(2)  # not caught up
    assert merge(caught_up=True).idle(7)


def test_a_limit_leaves_the_rest_for_the_next_turn_at_once() -> None:
    m = merge()
    m.add([arrived(0, i, NOW - 60_000 + i) for i in range(10)])
    assert order(m.release(NOW, limit=4)) == [(0, i) for i in range(4)]
    assert m.next_release_ms == NOW
    assert order(m.release(NOW, limit=100)) == [(0, i) for i in range(4, 10)]
    assert m.next_release_ms is None


def test_forgetting_drops_what_is_held() -> None:
    m = merge(caught_up=False)
    m.add([arrived(0, 0, NOW, partition=1), arrived(0, 0, NOW, partition=2)])
    m.forget([1])
    assert m.queued(0, 1) == 0 and m.queued(0, 2) == 1
    m.forget()
    assert m.held() == 0
