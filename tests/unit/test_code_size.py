"""The service's code stays in pieces a reader can hold: no module in streams/ over 400 lines,
no class over 250."""

from __future__ import annotations

import ast
from pathlib import Path

STREAMS = Path(__file__).resolve().parents[2] / "streams"
MODULE_LINES = 400
CLASS_LINES = 250


def test_no_module_is_over_400_lines() -> None:
    long = {
        str(path.relative_to(STREAMS)): n
        for path in STREAMS.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MODULE_LINES
    }
    assert not long, f"modules over {MODULE_LINES} lines: {long}"


def test_no_class_is_over_250_lines() -> None:
    long = {}
    for path in STREAMS.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                lines = node.end_lineno - node.lineno + 1
                if lines > CLASS_LINES:
                    long[f"{path.relative_to(STREAMS)}:{node.name}"] = lines
    assert not long, f"classes over {CLASS_LINES} lines: {long}"
