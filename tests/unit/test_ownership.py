"""The one record of which partitions a worker owns, as Faust's callbacks move it."""

from __future__ import annotations

from streams.processing.ownership import Ownership


async def test_a_partition_is_owned_only_from_its_take_over_to_its_revocation() -> None:
    ownership = Ownership()
    assert not ownership.settled.is_set() and ownership.owned == frozenset()
    ownership.assign([0, 1, 2])
    assert ownership.owned == frozenset() and not ownership.up_to_date  # restoring
    ownership.take_over({0, 1, 2})
    assert ownership.owned == {0, 1, 2} and ownership.up_to_date
    ownership.revoke({2})  # from the moment the revocation arrives
    assert ownership.owned == {0, 1} and ownership.assigned == {0, 1}
    assert not ownership.settled.is_set() and not ownership.up_to_date
    ownership.assign([0, 1, 3])
    assert not ownership.up_to_date  # 3 is not restored yet
    ownership.take_over({0, 1, 3})
    assert ownership.owned == {0, 1, 3} and ownership.up_to_date
