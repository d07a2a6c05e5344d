"""Tumbling-window arithmetic. Windows are aligned to the Unix epoch; all times are epoch ms."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WindowPolicy:
    size_ms: int
    grace_ms: int

    def start_of(self, timestamp_ms: int) -> int:
        return timestamp_ms - timestamp_ms % self.size_ms

    def end_of(self, window_start_ms: int) -> int:
        return window_start_ms + self.size_ms

    def closes_at(self, window_start_ms: int) -> int:
        """Wall-clock time from which the window is closed: its end plus the grace period."""
        return window_start_ms + self.size_ms + self.grace_ms

    def is_closed(self, window_start_ms: int, clock_ms: int) -> bool:
        return clock_ms >= self.closes_at(window_start_ms)

    def effective_timestamp(self, signal_ms: int, now_ms: int) -> int:
        """A signal stamped beyond the grace period in the future belongs to the current window."""
        return now_ms if signal_ms > now_ms + self.grace_ms else signal_ms
