"""A worker's event stream (``GET /events``) as a test reads it: blocking, line by line."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any


class EventStream:
    """An open ``/events`` stream; :meth:`live` waits for the worker to say it is live."""

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        request = urllib.request.Request(f"{base_url}/events", headers=headers)
        self.response = urllib.request.urlopen(request, timeout=timeout)
        self.seen: list[tuple[str, Any]] = []

    def close(self) -> None:
        self.response.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def next_event(self) -> tuple[str, Any]:
        """The next event (name, JSON data); comments (keep-alives) are skipped."""
        name, data = "message", []
        while True:
            line = self.response.readline()
            if not line:
                raise AssertionError(f"the event stream ended; seen: {self.seen[-5:]}")
            text = line.decode().rstrip("\r\n")
            if not text:
                if data:
                    event = (name, json.loads("\n".join(data)))
                    self.seen.append(event)
                    return event
                name = "message"
                continue
            if text.startswith(":"):
                continue
            field, _, value = text.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)

    def until(self, name: str, predicate: Any = lambda body: True, timeout: float = 30.0) -> Any:
        """The data of the first ``name`` event for which ``predicate(data)`` holds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            event, body = self.next_event()
            if event == name and predicate(body):
                return body
        raise AssertionError(f"no matching {name!r} event within {timeout:.0f} s: {self.seen[-5:]}")

    def live(self, timeout: float = 30.0) -> None:
        self.until("status", lambda body: body.get("live") is True, timeout)
