"""Pages of fleet-wide views: cursors, limits, and the merge of every worker's own page."""

from __future__ import annotations

import pytest

from streams.web.pages import (
    MAX_PAGE,
    BadRequest,
    LocalPage,
    decode_cursor,
    encode_cursor,
    merge_pages,
    page_body,
    parse_limit,
)


def _page(
    dids: list[str], stopped_at: str | None = None, partitions: list[int] | None = None
) -> LocalPage:
    return LocalPage([(did, {"agent_did": did}) for did in dids], stopped_at, partitions or [])


def test_a_cursor_is_opaque_and_round_trips_any_did() -> None:
    for did in ("did:mesh:a", "did:web:example.com:x%20y", "did:m:ü/+="):
        cursor = encode_cursor(did)
        assert did not in cursor and "=" not in cursor and "/" not in cursor
        assert decode_cursor(cursor) == did
    assert decode_cursor(None) is None and decode_cursor("") is None
    with pytest.raises(BadRequest):
        decode_cursor("%%%")
    with pytest.raises(BadRequest):
        decode_cursor(encode_cursor("x")[:-1] + "_" * 3 + "\xff")


def test_limits_are_bounded() -> None:
    assert parse_limit(None) == 100
    assert parse_limit("1") == 1 and parse_limit(str(MAX_PAGE)) == MAX_PAGE
    for bad in ("0", "-1", str(MAX_PAGE + 1), "ten", "1.5", ""):
        with pytest.raises(BadRequest):
            parse_limit(bad)


def test_pages_of_workers_that_read_to_the_end_merge_in_did_order() -> None:
    merged = merge_pages(
        [_page(["did:m:b", "did:m:d"], partitions=[0]), _page(["did:m:a"], partitions=[1])],
        limit=10,
        partitions=2,
    )
    assert [did for did, _ in merged.items] == ["did:m:a", "did:m:b", "did:m:d"]
    assert merged.next_after is None and merged.missing_partitions == []


def test_a_full_page_goes_on_after_its_last_agent() -> None:
    merged = merge_pages(
        [
            _page(["did:m:a", "did:m:c"], "did:m:c", [0]),
            _page(["did:m:b", "did:m:d"], "did:m:d", [1]),
        ],
        limit=2,
        partitions=2,
    )
    assert [did for did, _ in merged.items] == ["did:m:a", "did:m:b"]
    assert merged.next_after == "did:m:b"


def test_a_worker_that_stopped_early_bounds_the_page() -> None:
    # Worker 1 read only up to did:m:c (its budget): agents of the others after that point wait
    # for the next page, or worker 1's agents between c and them would be skipped.
    merged = merge_pages(
        [_page(["did:m:a", "did:m:e", "did:m:f"], None, [0]), _page([], "did:m:c", [1])],
        limit=10,
        partitions=2,
    )
    assert [did for did, _ in merged.items] == ["did:m:a"]
    assert merged.next_after == "did:m:c"


def test_partitions_no_worker_read_are_named_and_totals_add_up() -> None:
    first = _page(["did:m:a"], None, [0])
    first.totals, first.counted_at = {"total_agents": 3}, 100.0
    second = _page([], None, [2])
    second.totals, second.counted_at = {"total_agents": 4}, 90.0
    merged = merge_pages([first, second], limit=10, partitions=4)
    assert merged.missing_partitions == [1, 3]
    assert merged.totals == {"total_agents": 7} and merged.counted_at == 90.0
    second.counted_at = None
    assert merge_pages([first, second], limit=10, partitions=4).counted_at is None


def test_the_body_says_what_is_missing() -> None:
    merged = merge_pages([_page(["did:m:a"], "did:m:a", [0, 1])], limit=1, partitions=2)
    body = page_body(merged, ["http://w2:6066"])
    assert body["partial"] is True and body["missing_workers"] == ["http://w2:6066"]
    assert body["count"] == 1 and decode_cursor(body["next_cursor"]) == "did:m:a"
    complete = page_body(merge_pages([_page([], None, [0, 1])], 1, 2), [])
    assert complete["partial"] is False and complete["next_cursor"] is None
    assert page_body(merged, [], items_as="map")["agents"] == {"did:m:a": {"agent_did": "did:m:a"}}


def test_a_page_travels_between_workers_as_json() -> None:
    page = _page(["did:m:a"], "did:m:a", [3])
    page.totals, page.counted_at = {"total_agents": 1}, 12.5
    assert LocalPage.from_json(page.to_json()) == page
    for bad in (None, [], {"items": 1}, {"items": [], "stopped_at": None}):
        with pytest.raises(ValueError):
            LocalPage.from_json(bad)
