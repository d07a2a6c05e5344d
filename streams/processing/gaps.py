"""Guarding the pipeline against records the consumer skips.

Why this exists: when a rebalance interrupts a fetch, Faust can hand the agent a partition's
records with a hole in the offsets (the rest of an interrupted fetch is dropped while the client's
position has moved on). Faust treats such a hole as acknowledged, as it would a compacted range, so
the committed offset can move past records nobody applied; and our per-agent "last applied offset"
would then mistake those records, if redelivered later, for duplicates. Both lose signals.

So every topic-partition's offsets are checked to be contiguous. At a hole, the records from the
hole on are held back (not applied), and the partition is rewound to the first missing offset;
they come again, in order. A hole that is still there after a rewind is real (a transaction marker,
say) and is accepted.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

TopicPartition = tuple[str, int]
Rewind = Callable[[str, int, int], Awaitable[None]]


@dataclass(slots=True)
class OffsetGuard:
    rewind: Rewind
    #: Next offset expected per topic-partition; unknown until a record is seen.
    expected: dict[TopicPartition, int] = field(default_factory=dict)
    #: Holes already rewound once: (missing from, next present) per topic-partition.
    rewound: dict[TopicPartition, tuple[int, int]] = field(default_factory=dict)
    holes_rewound: int = 0

    def forget(self, partitions: set[int]) -> None:
        for tp in [tp for tp in self.expected if tp[1] in partitions]:
            del self.expected[tp]
            self.rewound.pop(tp, None)

    def admit(self, events: Sequence[Any]) -> tuple[list[Any], dict[TopicPartition, int]]:
        """The events safe to apply now, and the rewinds owed (first missing offset per tp)."""
        admitted: list[Any] = []
        holes: dict[TopicPartition, int] = {}
        expected = self.expected
        for event in events:
            message = event.message
            tp = (message.topic, message.partition)
            if tp in holes:
                continue  # held back behind a hole: it will be delivered again after the rewind
            want = expected.get(tp)
            offset = message.offset
            if want is not None and offset > want:
                if self.rewound.get(tp) == (want, offset):
                    del self.rewound[tp]  # still missing after a rewind: a real hole
                else:
                    holes[tp] = want
                    self.rewound[tp] = (want, offset)
                    continue
            if want is None or offset >= want:
                expected[tp] = offset + 1
            admitted.append(event)
        return admitted, holes

    async def rewind_holes(self, holes: dict[TopicPartition, int]) -> None:
        for (topic, partition), offset in holes.items():
            self.holes_rewound += 1
            log.warning(
                "Records of %s[%d] from offset %d were skipped by the consumer; rewinding to "
                "read them again, in order",
                topic,
                partition,
                offset,
            )
            await self.rewind(topic, partition, offset)
