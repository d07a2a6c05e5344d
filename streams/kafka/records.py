"""A consumed record as the worker reads it, whichever client read it."""

from __future__ import annotations

from typing import NamedTuple


class Record(NamedTuple):
    """One consumed record: what the signal reader hands the feed, and what a Faust event is
    turned into (aiokafka's ConsumerRecord has the same attributes)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    #: The record's timestamp in milliseconds.
    timestamp: int
