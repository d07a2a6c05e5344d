"""Repeated client errors are let through once per interval, with a count of those held back."""

from __future__ import annotations

import logging

from streams.kafka.logthrottle import RepeatThrottle


def record(msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("aiokafka", logging.ERROR, __file__, 1, msg, args, None)


def test_each_message_once_per_interval_then_a_count() -> None:
    now = [0.0]
    throttle = RepeatThrottle(interval=30.0, clock=lambda: now[0])
    passed = [throttle.filter(record("Unable connect to node with id %s: %s", 1, "refused"))]
    for _ in range(1000):
        now[0] += 0.01
        passed.append(throttle.filter(record("Unable connect to node with id %s: %s", 1, "x")))
    # Another message is not held back by the first one's interval.
    assert throttle.filter(record("Unable to update metadata from %s", [1]))
    assert passed.count(True) == 1
    now[0] = 31.0
    summary = record("Unable connect to node with id %s: %s", 1, "refused")
    assert throttle.filter(summary)
    assert "1000 more like this" in summary.getMessage()
    assert summary.getMessage().startswith("Unable connect to node with id 1: refused")
