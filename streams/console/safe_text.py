"""Text from the wire made safe to print on a terminal.

Anything a producer or a worker sends (DIDs, signal sources, reasons, error texts, dead-lettered
bytes) may hold control characters: an ANSI escape sequence in a signal's ``source`` could
recolour, move the cursor, rewrite earlier lines, set the window title or, on some terminals,
answer back as keystrokes. Every piece of such text goes through :func:`safe` before the console
prints it; the console's own colours are added afterwards, around text already made safe.

What is done: escape sequences (CSI, OSC, DCS and the other string sequences, and two-byte
ESC sequences) are removed whole; every other C0 or C1 control character, DEL, and the Unicode
line and paragraph separators and bidirectional overrides (which reorder what is shown) are
replaced by a visible ``\\xNN`` or ``\\uNNNN`` escape, so nothing is hidden silently.
"""

from __future__ import annotations

import re

# ESC [ ... final byte (CSI), ESC ] ... BEL or ST (OSC), ESC P/X/^/_ ... ST (DCS, SOS, PM, APC),
# and the lone C1 introducers (0x9B CSI, 0x9D OSC, 0x90 DCS, ...) that some terminals honour.
_SEQUENCES = re.compile(
    r"""
    (?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?            # CSI ... final byte (maybe cut short)
    | (?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])     # OSC, DCS, SOS, PM, APC ...
      [^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?       # ... up to BEL or ST (or the end)
    | \x1b[ -/]*[0-~]?                            # any other ESC sequence
    """,
    re.VERBOSE,
)
# C0 controls but tab, DEL, C1 controls; line/paragraph separators; bidirectional controls.
_CONTROLS = re.compile(
    "[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe(value: object, *, keep_newlines: bool = False) -> str:
    """``value`` as text that prints as itself: no escape sequences, every control character
    shown as an escape. Tabs are kept; newlines only with ``keep_newlines`` (for multi-line
    text the console lays out itself)."""
    text = value if isinstance(value, str) else str(value)
    if text.isprintable():  # the common case: nothing to do
        return text
    text = _SEQUENCES.sub("", text)
    if keep_newlines:
        return "\n".join(_CONTROLS.sub(_visible, line) for line in text.split("\n"))
    return _CONTROLS.sub(_visible, text)


def safe_bytes(value: bytes) -> str:
    """Raw bytes from the wire as safe text: UTF-8 where it decodes (invalid bytes shown as
    ``\\xNN``), then as :func:`safe`."""
    return safe(value.decode("utf-8", errors="backslashreplace"))
