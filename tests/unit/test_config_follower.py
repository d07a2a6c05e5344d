"""The config follower over hostile records: whatever a record holds, it is ignored, counted and
logged once, the configuration in force stays, and a later valid record still comes into force."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from aiokafka.errors import KafkaConnectionError
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.processing import config_topic
from streams.processing.config_topic import (
    CONFIG_KEY,
    MAX_CONFIG_RECORD_BYTES,
    ConfigFollower,
    encode_update,
)
from streams.scoring.model import DEFAULT_WEIGHTS, ScoringConfig

DEFAULT = ScoringConfig.validated(DEFAULT_WEIGHTS)
VALID = encode_update(ScoringConfig.validated((0.1, 0.1, 0.1, 0.6, 0.1)))
OTHER_VALID = encode_update(ScoringConfig.validated(DEFAULT_WEIGHTS, 250, 450))
WEIGHT_NAMES = list(json.loads(VALID)["weights"])


def follower() -> ConfigFollower:
    return ConfigFollower("127.0.0.1:1", "t.trust.config", DEFAULT)


def valid_body(**changes: object) -> bytes:
    body = json.loads(VALID)
    body.update(changes)
    return json.dumps(body).encode()


HOSTILE: list[tuple[str, bytes | None, bytes | None]] = [
    ("tombstone", CONFIG_KEY, None),
    ("not utf-8", CONFIG_KEY, b"\xff\xfe\xfd"),
    ("not json", CONFIG_KEY, b"weights=1"),
    ("empty", CONFIG_KEY, b""),
    ("json null", CONFIG_KEY, b"null"),
    ("a list", CONFIG_KEY, b"[1, 2, 3]"),
    ("an empty object", CONFIG_KEY, b"{}"),
    ("deep nesting", CONFIG_KEY, b"[" * 100_000 + b"]" * 100_000),
    ("deep objects", CONFIG_KEY, b'{"weights":' * 50_000),
    ("huge", CONFIG_KEY, b'{"requested_by": "' + b"x" * (MAX_CONFIG_RECORD_BYTES + 1) + b'"}'),
    ("huge number", CONFIG_KEY, valid_body(revocation_threshold=10**400)),
    ("weights as a list", CONFIG_KEY, valid_body(weights=[0.2] * 5)),
    (
        "weights not summing to 1",
        CONFIG_KEY,
        valid_body(weights=dict.fromkeys(json.loads(VALID)["weights"], 0.5)),
    ),
    ("unknown field", CONFIG_KEY, valid_body(admin=True)),
    ("NaN weight", CONFIG_KEY, VALID.replace(b"0.6", b"NaN")),
    ("thresholds crossed", CONFIG_KEY, valid_body(revocation_threshold=900, warning_threshold=100)),
    ("floor out of range", CONFIG_KEY, valid_body(floors={"security_posture": {"floor": 1e9}})),
    ("a thousand wrong keys", CONFIG_KEY, valid_body(weights={f"k{i}": 0 for i in range(1000)})),
    ("wrong key", b"other-key", VALID),
    ("no key", None, VALID),
    ("non-utf-8 key", b"\xff" * 10_000, VALID),
]


@pytest.mark.parametrize(("what", "key", "value"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_a_hostile_record_is_ignored_counted_and_logged_once(
    what: str, key: bytes | None, value: bytes | None, caplog: pytest.LogCaptureFixture
) -> None:
    f = follower()
    f.apply(CONFIG_KEY, OTHER_VALID, 0)
    assert f.current.version == 1
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="streams.processing.config_topic"):
        f.apply(key, value, 7)
    assert f.current.version == 1 and f.current.revocation_threshold == 250
    assert f.rejected_records == 1
    assert f.last_rejection is not None and f.last_rejection.startswith("offset 7: ")
    assert len(f.last_rejection) < 600  # bounded whatever the record's size
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and len(caplog.records) == 1
    message = errors[0].getMessage()
    assert "offset 7" in message and len(message) < 800
    # A later valid record still comes into force, with a higher version.
    f.apply(CONFIG_KEY, VALID, 8)
    assert f.current.version == 9 and f.current.weights == (0.1, 0.1, 0.1, 0.6, 0.1)


def test_rejections_name_their_reason() -> None:
    f = follower()
    f.apply(CONFIG_KEY, None, 0)
    assert f.last_rejection == "offset 0: empty record (a tombstone)"
    f.apply(b"other", VALID, 1)
    assert f.last_rejection == "offset 1: key b'other' is not b'scoring-config'"
    f.apply(CONFIG_KEY, b"x" * (MAX_CONFIG_RECORD_BYTES + 1), 2)
    assert "over the 65536 a configuration may have" in (f.last_rejection or "")
    f.apply(CONFIG_KEY, valid_body(weights={f"k{i}": 0 for i in range(1000)}), 3)
    assert (f.last_rejection or "").startswith("offset 3: 1000 problems, the first 5: weights.k0")
    assert f.rejected_records == 4 and f.current is DEFAULT


def test_an_older_or_repeated_valid_record_changes_nothing() -> None:
    f = follower()
    f.apply(CONFIG_KEY, VALID, 5)
    f.apply(CONFIG_KEY, OTHER_VALID, 3)
    f.apply(CONFIG_KEY, OTHER_VALID, 5)
    assert f.current.version == 6 and f.current.weights == (0.1, 0.1, 0.1, 0.6, 0.1)
    assert f.rejected_records == 0


def test_an_unexpected_error_while_reading_a_record_is_a_rejection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(value: bytes | None, offset: int) -> ScoringConfig:
        raise RecursionError("deep")

    monkeypatch.setattr(config_topic, "config_from_record", broken)
    f = follower()
    f.apply(CONFIG_KEY, VALID, 0)
    assert f.rejected_records == 1 and "RecursionError" in (f.last_rejection or "")


@settings(max_examples=300, deadline=None)
@given(
    records=st.lists(
        st.tuples(
            st.one_of(st.none(), st.just(CONFIG_KEY), st.binary(max_size=20)),
            st.one_of(
                st.none(),
                st.binary(max_size=300),
                st.recursive(
                    st.none() | st.booleans() | st.floats() | st.integers() | st.text(),
                    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
                    max_leaves=20,
                ).map(lambda v: json.dumps(v).encode()),
            ),
        ),
        max_size=10,
    )
)
def test_any_records_leave_the_follower_working(
    records: list[tuple[bytes | None, bytes | None]],
) -> None:
    f = follower()
    for offset, (key, value) in enumerate(records):
        f.apply(key, value, offset)
    assert f.current is DEFAULT  # none of these is a complete, valid configuration
    assert f.rejected_records == len(records)
    f.apply(CONFIG_KEY, VALID, len(records))
    assert f.current.version == len(records) + 1


async def test_a_broker_that_cannot_be_reached_never_ends_the_follower(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(config_topic, "_RETRY_MIN_SECONDS", 0.05)
    monkeypatch.setattr(config_topic, "_RETRY_MAX_SECONDS", 0.1)
    f = follower()  # nothing listens on port 1
    task = asyncio.create_task(f.run())
    try:
        for _ in range(600):  # 30 s at most
            if f.follow_failures >= 3:
                break
            await asyncio.sleep(0.05)
        assert f.follow_failures >= 3
        assert not task.done()
        assert not f.ready.is_set() and f.current is DEFAULT
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_reading_once_reports_a_broker_that_cannot_be_reached() -> None:
    with pytest.raises(KafkaConnectionError):
        await config_topic.read_config("127.0.0.1:1", "t.trust.config", DEFAULT)
