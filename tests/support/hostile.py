"""Records nobody should send, and the checks that what the worker made of them is bounded.

A dead letter describes the original instead of copying it whole: its sizes, the sha256 of its
value, and a bounded prefix of key and value (``*_truncated`` when cut). These checks hold a dead
letter to that, and to the original record it names.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import random
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from aiokafka.partitioner import murmur2

from .kafka_io import producer
from .signals import DIMENSIONS, signal_topic

#: The default of TRUST_DEAD_LETTER_VALUE_BYTES: at most this much of a value (or key) is kept.
DEAD_LETTER_PREFIX_BYTES = 4096
#: A dead letter keeps two prefixes of at most 4 KiB; escaped as JSON (\u0001: six bytes for one)
#: they stay under 50 KiB, whatever the original's size.
MAX_DEAD_LETTER_BYTES = 64 * 1024
#: Records of a batch besides the value: batch header (61 bytes), record framing, the key.
RECORD_OVERHEAD_BYTES = 512


def partition_of(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner (murmur2 on the key bytes), the one the worker expects."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


@dataclass(frozen=True, slots=True)
class Hostile:
    """A record to send, and the dead letter's ``error_kind`` it must get (None: any kind)."""

    label: str
    topic: str
    key: bytes | None
    value: bytes | None
    kind: str | None
    partition: int | None = None


async def produce_to(
    bootstrap: str, records: list[tuple[str, int | None, bytes | None, bytes | None]]
) -> list[tuple[str, int, int]]:
    """Send (topic, partition or None, key, value) records; (topic, partition, offset) of each."""
    async with producer(bootstrap, max_request_size=4 * 1024 * 1024) as p:
        futures = [
            await p.send(topic, value=value, key=key, partition=partition)
            for topic, partition, key, value in records
        ]
        placed = await asyncio.gather(*futures)
    return [(m.topic, m.partition, m.offset) for m in placed]


def _signal(did: str, **extra: object) -> bytes:
    return orjson.dumps({"agent_did": did, "value": 0.5, "source": "hostile", **extra})


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat()


def hostile_signals(
    prefix: str, rng: random.Random, broker_limit: int, partitions: int, now_ms: int
) -> list[Hostile]:
    """Bad records of every size up to what the broker accepts, spread over the signal topics."""

    def topic(i: int) -> str:
        return signal_topic(prefix, DIMENSIONS[i % len(DIMENSIONS)])

    def did(i: int) -> str:
        return f"did:mesh:hostile-{i:03d}"

    near_limit = broker_limit - RECORD_OVERHEAD_BYTES
    records = [
        Hostile("170 KB of control bytes", topic(0), did(0).encode(), b"\x01" * 170_000, None),
        Hostile("700 KB random", topic(1), did(1).encode(), rng.randbytes(700_000), None),
        Hostile("1 MB minus overhead", topic(2), did(2).encode(), b"\x01" * near_limit, None),
        Hostile("1 MB random", topic(3), did(3).encode(), rng.randbytes(near_limit - 64), None),
        Hostile(
            "valid signal padded past the limit",
            topic(4),
            did(4).encode(),
            _signal(did(4)) + b" " * 70_000,
            "too_large",
        ),
        Hostile("empty value", topic(0), did(5).encode(), b"", None),
        Hostile("tombstone", topic(1), did(6).encode(), None, None),
        Hostile("huge key", topic(2), b"k" * 600_000, _signal(did(7)), None),
        Hostile(
            "huge control-byte key, huge value",
            topic(3),
            b"\x01" * 300_000,
            b"\x00" * 600_000,
            None,
        ),
        Hostile("huge binary key", topic(4), rng.randbytes(400_000), rng.randbytes(1000), None),
        Hostile("non-UTF-8 key", topic(0), b"\xff\xfe\x80did", _signal(did(8)), None),
        Hostile("non-UTF-8 key, binary value", topic(1), b"\xc3\x28", b"\xff" * 5000, None),
        Hostile("null key", topic(2), None, _signal(did(9)), "missing_key"),
        Hostile("null key, random value", topic(3), None, rng.randbytes(3000), None),
        Hostile("deep nesting", topic(4), did(10).encode(), b"[" * 60_000, None),
        Hostile("control bytes in JSON", topic(0), did(11).encode(), b'{"a":"\x01\x02"}', None),
        Hostile(
            "escaped controls in details",
            topic(1),
            did(12).encode(),
            _signal(did(12), details="\u0001" * 9000),
            None,
        ),
        Hostile(
            "timestamp in 1970",
            topic(2),
            did(13).encode(),
            _signal(did(13), timestamp="1970-01-01T00:00:00+00:00"),
            "invalid_timestamp",
        ),
        Hostile(
            "timestamp in 1999",
            topic(3),
            did(14).encode(),
            _signal(did(14), timestamp="1999-12-31T23:59:59Z"),
            "invalid_timestamp",
        ),
        Hostile(
            "timestamp in year 1",
            topic(4),
            did(15).encode(),
            _signal(did(15), timestamp="0001-01-01T00:00:00Z"),
            "invalid_timestamp",
        ),
        Hostile(
            "timestamp in 9999",
            topic(0),
            did(16).encode(),
            _signal(did(16), timestamp="9999-12-31T23:59:59+00:00"),
            "invalid_timestamp",
        ),
        Hostile(
            "timestamp two days ahead",
            topic(1),
            did(17).encode(),
            _signal(did(17), timestamp=_iso(now_ms + 2 * 86_400_000)),
            "invalid_timestamp",
        ),
    ]
    for i, size in enumerate((1, 2, 7, 100, 1000, 10_000, 65_000, 66_000, 250_000)):
        records.append(
            Hostile(
                f"{size} random bytes", topic(i), did(20 + i).encode(), rng.randbytes(size), None
            )
        )
    for i in range(5):
        key = did(40 + i).encode()
        right = partition_of(key, partitions)
        records.append(
            Hostile(
                "valid signal on the wrong partition",
                topic(i),
                key,
                _signal(did(40 + i), timestamp=_iso(now_ms)),
                "wrong_partition",
                partition=(right + 1 + i % (partitions - 1)) % partitions,
            )
        )
    return records


def letter_position(value: bytes | None) -> tuple[str, int, int]:
    """Where the record a dead letter describes was: (topic, partition, offset)."""
    assert value is not None
    body = orjson.loads(value)
    return body["topic"], body["partition"], body["offset"]


def _decoded(text: str | None, encoding: str | None) -> bytes | None:
    if text is None:
        return None
    if encoding == "base64":
        return base64.b64decode(text, validate=True)
    assert encoding == "utf-8", encoding
    return text.encode()


def _check_part(letter: dict, name: str, original: bytes | None, limit: int) -> None:  # type: ignore[type-arg]
    """``name`` (key or value) of the letter is a bounded, faithful prefix of ``original``."""
    prefix = _decoded(letter[name], letter[f"{name}_encoding"])
    size = letter.get(f"{name}_size")
    truncated = letter.get(f"{name}_truncated", False)
    where = f"{name} of the letter for {letter['topic']}[{letter['partition']}]@{letter['offset']}"
    if original is None:
        assert prefix is None, where
        assert size in (None, 0), (where, size)
        assert not truncated, where
        return
    assert size == len(original), (where, size, len(original))
    assert prefix is not None, where
    assert len(prefix) <= limit, (where, len(prefix))
    assert original.startswith(prefix), where
    if len(prefix) < len(original):
        assert truncated is True, where
    else:
        assert not truncated, where


def assert_letter_describes(
    letter: dict,  # type: ignore[type-arg]
    key: bytes | None,
    value: bytes | None,
    limit: int = DEAD_LETTER_PREFIX_BYTES,
) -> None:
    """The dead letter names the original's sizes and value hash, and keeps bounded prefixes."""
    _check_part(letter, "value", value, limit)
    _check_part(letter, "key", key, limit)
    digest = letter.get("value_sha256")
    if value is None:
        assert digest in (None, hashlib.sha256(b"").hexdigest()), letter
    else:
        assert digest == hashlib.sha256(value).hexdigest(), (letter["offset"], digest)
    if letter.get("key_sha256") is not None:
        assert key is not None and letter["key_sha256"] == hashlib.sha256(key).hexdigest()
