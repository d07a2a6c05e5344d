"""A worker's HTTP pages as a test reads them: status and body, and Prometheus samples by name."""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})? (\S+)$", re.MULTILINE)
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def get(base_url: str, path: str, timeout: float = 5.0) -> tuple[int, str]:
    """(status, body) of a GET; an HTTP error status is an answer, not an exception."""
    try:
        with urllib.request.urlopen(f"{base_url}{path}", timeout=timeout) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def try_get(base_url: str, path: str, timeout: float = 5.0) -> tuple[int, str] | None:
    """Like :func:`get`, but None when the server does not answer at all."""
    try:
        return get(base_url, path, timeout)
    except OSError:
        return None


def poll_page(
    base_url: str, path: str, predicate: Callable[[int, str], bool], timeout: float
) -> tuple[bool, tuple[int, str] | None]:
    """Poll ``path`` until ``predicate(status, body)`` holds or ``timeout`` passes: whether it
    did, and the last answer (None: the server did not answer)."""
    deadline = time.monotonic() + timeout
    while True:
        last = try_get(base_url, path)
        if last is not None and predicate(*last):
            return True, last
        if time.monotonic() >= deadline:
            return False, last
        time.sleep(0.2)


def wait_for_page(
    base_url: str,
    path: str,
    predicate: Callable[[int, str], bool],
    timeout: float,
    what: str,
) -> tuple[int, str]:
    """Poll ``path`` until ``predicate(status, body)`` holds; fail with the last answer."""
    held, last = poll_page(base_url, path, predicate, timeout)
    if not held or last is None:
        shown = "no answer" if last is None else f"{last[0]}: {last[1][:2000]}"
        raise AssertionError(f"{what}: {path} never did within {timeout:.0f} s; last {shown}")
    return last


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Every sample of metric ``name`` (counters also match with their ``_total`` suffix)."""
    found = []
    for match in _SAMPLE.finditer(text):
        sample_name, labels, value = match.groups()
        if sample_name in (name, f"{name}_total"):
            found.append((dict(_LABEL.findall(labels or "")), float(value)))
    return found


def metric_sum(text: str, name: str, **label_contains: str) -> float | None:
    """Sum of the samples of ``name`` whose labels contain the given substrings; None if none."""
    values = [
        value
        for labels, value in samples(text, name)
        if all(part in labels.get(label, "") for label, part in label_contains.items())
    ]
    return sum(values) if values else None
