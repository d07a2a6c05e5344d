"""Record batches as a broker stores them (magic 2), built byte for byte for readers' tests:
data batches, transactional ones and the control batches that end transactions."""

from __future__ import annotations

import struct
from typing import Any

from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.util import calc_crc32c

NO_PRODUCER = -1
#: Byte offsets in a magic 2 batch header: the CRC, and the attributes (where the CRC starts).
CRC_AT = 17
ATTRIBUTES_AT = 21
CONTROL_BIT = 0x20
ABORT, COMMIT = 0, 1

Record = tuple[int, bytes | None, bytes | None]  # offset delta, key, value


def batch(
    base: int,
    records: list[Record],
    *,
    producer_id: int = NO_PRODUCER,
    transactional: bool = False,
    control: bool = False,
) -> bytes:
    """A magic 2 batch whose first offset is ``base`` (as the broker sets it)."""
    builder = DefaultRecordBatchBuilder(
        2, 0, int(transactional), producer_id, 0 if producer_id >= 0 else -1, -1, 1 << 20
    )
    for delta, key, value in records:
        builder.append(delta, 1_700_000_000_000 + delta, key, value, [])
    data = bytearray(builder.build())
    struct.pack_into(">q", data, 0, base)  # outside what the CRC covers
    if control:
        (attributes,) = struct.unpack_from(">h", data, ATTRIBUTES_AT)
        struct.pack_into(">h", data, ATTRIBUTES_AT, attributes | CONTROL_BIT)
        struct.pack_into(">I", data, CRC_AT, calc_crc32c(bytes(data[ATTRIBUTES_AT:])))
    return bytes(data)


def data_batch(base: int, count: int, **kwargs: Any) -> bytes:
    """``count`` records at ``base``, ``base + 1``, ...: key ``k<offset>``, value ``v<offset>``."""
    records: list[Record] = [
        (i, f"k{base + i}".encode(), f"v{base + i}".encode()) for i in range(count)
    ]
    return batch(base, records, **kwargs)


def marker(offset: int, producer_id: int, kind: int) -> bytes:
    """The control batch that ends ``producer_id``'s transaction (``ABORT`` or ``COMMIT``)."""
    key = struct.pack(">hh", 0, kind)
    value = struct.pack(">hi", 0, 0)  # version, coordinator epoch
    return batch(
        offset, [(0, key, value)], producer_id=producer_id, transactional=True, control=True
    )
