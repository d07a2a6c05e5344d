"""Forged and malformed records for the worker's internal topics: ticks, commands, configuration.

Anyone who can write to a topic can write these; none of them may stop a worker, move its clock,
lift a revocation or replace the configuration in force.
"""

from __future__ import annotations

import random

import orjson

from .hostile import partition_of

#: 2**70, beyond any 64-bit integer (orjson cannot even write it).
HUGE_INT = b"1180591620717411303424"


def forged_tick_values(now_ms: int) -> list[tuple[str, bytes | None]]:
    """(label, value) of records that are not ticks a worker may apply now."""
    return [
        ("epoch zero", b'{"t": 0}'),
        ("1999", b'{"t": 946684799000}'),
        ("year 10000", b'{"t": 253402300800000}'),
        ("an hour ahead", orjson.dumps({"t": now_ms + 3_600_000})),
        ("a year ahead", orjson.dumps({"t": now_ms + 365 * 86_400_000})),
        ("2**70", b'{"t": ' + HUGE_INT + b"}"),
        ("negative", b'{"t": -1}'),
        ("int64 min", b'{"t": -9223372036854775808}'),
        ("int64 max", b'{"t": 9223372036854775807}'),
        ("float", b'{"t": 1.7e12}'),
        ("float now", orjson.dumps({"t": float(now_ms)})),
        ("string", orjson.dumps({"t": str(now_ms)})),
        ("bool", b'{"t": true}'),
        ("null", b'{"t": null}'),
        ("nested", b'{"t": {"t": 1}}'),
        ("not JSON", b"not json"),
        ("binary", b"\xff\xfe\x00\x01"),
        ("deep nesting", b"[" * 100_000),
        ("empty", b""),
        ("tombstone", None),
        ("empty object", b"{}"),
        ("array", b"[1, 2]"),
    ]


def future_tick(now_ms: int, ahead_ms: int = 3_600_000) -> bytes:
    return orjson.dumps({"t": now_ms + ahead_ms})


def forged_commands(
    prefix: str, rng: random.Random, partitions: int
) -> list[tuple[str, int | None, bytes | None, bytes | None]]:
    """Malformed records on the commands topic: (topic, partition, key, value); every one must be
    refused (and dead-lettered as ``invalid_command``)."""
    topic = f"{prefix}trust.internal.commands"
    did = "did:mesh:forged-commander"
    key = did.encode()
    ok = {"command": "reinstate", "agent_did": did, "requested_by": "ops", "reason": "forged"}
    values: list[bytes | None] = [
        b"not json",
        b"",
        None,
        b"[" * 100_000,
        b"{}",
        b"[]",
        b'"reinstate"',
        b"42",
        b"null",
        b"\xff\xfe\xfd",
        orjson.dumps({"command": "reinstate"}),
        orjson.dumps({**ok, "command": "delete"}),
        orjson.dumps({**ok, "agent_did": "not-a-did"}),
        orjson.dumps({**ok, "requested_by": 7}),
        orjson.dumps({**ok, "reason": ""}),
        orjson.dumps({**ok, "reason": "x" * 900_000}),
        orjson.dumps({**ok, "extra": True}),
        rng.randbytes(500_000),
    ]
    right = partition_of(key, partitions)
    return [(topic, right, key, value) for value in values]


def reinstatement_forgeries(
    prefix: str, did: str, partitions: int
) -> list[tuple[str, int | None, bytes | None, bytes | None]]:
    """Attempts to lift ``did``'s revocation with records the worker must refuse."""
    topic = f"{prefix}trust.internal.commands"
    key = did.encode()
    ok = {"command": "reinstate", "agent_did": did, "requested_by": "intruder", "reason": "forged"}
    right = partition_of(key, partitions)
    wrong = (right + 1) % partitions
    return [
        (topic, right, key, orjson.dumps({**ok, "extra": "field"})),
        (topic, right, key, orjson.dumps({**ok, "agent_did": did.upper()})),
        (topic, wrong, key, orjson.dumps(ok)),  # a valid command on the wrong partition
    ]


def unknown_agent_command(prefix: str, did: str, partitions: int) -> tuple[str, int, bytes, bytes]:
    """A well-formed reinstatement of an agent the worker never saw: refused, creates no state."""
    key = did.encode()
    body = {"command": "reinstate", "agent_did": did, "requested_by": "ops", "reason": "unknown"}
    return (
        f"{prefix}trust.internal.commands",
        partition_of(key, partitions),
        key,
        orjson.dumps(body),
    )


def forged_configs(prefix: str) -> list[tuple[str, int | None, bytes | None, bytes | None]]:
    """Records on the config topic that must never displace the configuration in force."""
    topic = f"{prefix}trust.config"
    key = b"scoring-config"
    dims = (
        "policy_compliance",
        "resource_efficiency",
        "output_quality",
        "security_posture",
        "collaboration_health",
    )
    other = {
        "weights": dict(zip(dims, (0.1, 0.1, 0.1, 0.6, 0.1), strict=True)),
        "revocation_threshold": 100,
        "warning_threshold": 200,
    }
    values: list[tuple[bytes | None, bytes | None]] = [
        (key, orjson.dumps({**other, "weights": dict.fromkeys(dims, 0.4)})),
        (key, orjson.dumps({**other, "revocation_threshold": 600, "warning_threshold": 500})),
        (key, orjson.dumps({"revocation_threshold": 100, "warning_threshold": 200})),
        (key, orjson.dumps({**other, "revocation_threshold": -5})),
        (key, orjson.dumps({**other, "warning_threshold": 10**12})),
        (key, orjson.dumps({**other, "floors": {"security_posture": {"floor": 101}}})),
        (key, orjson.dumps({**other, "evil": True})),
        (key, b'{"weights": {"policy_compliance": NaN}, "revocation_threshold": 1}'),
        (key, b"\xff\x00\x01"),
        (key, b""),
        (key, None),
        (key, b"[" * 60_000),
        (key, b"{}"),
        (key, b"null"),
        (key, b'"x"'),
        # Valid configurations, but not under the configuration's key: not configurations.
        (b"someone-else", orjson.dumps(other)),
        (None, orjson.dumps(other)),
    ]
    return [(topic, 0, k, v) for k, v in values]
