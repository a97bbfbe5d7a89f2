"""Page messages back in the order the page sent them.

Jupyter, VS Code, Colab, Solara and Shiny carry a page's messages over one
WebSocket, in order. marimo sends each page-to-kernel message as its own HTTP
POST, so two of them can overtake each other: a request body's chunks, or a
WebSocket's frames, would arrive shuffled. ``static/bridge.js`` numbers what
each bridge model sends (``src``: random per model, ``seq``: 0, 1, 2, …);
:class:`Reorder` hands messages on by that number. A message without the
numbers (an older page) passes straight through.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

__all__ = ["HOLD", "SOURCES", "Reorder"]

HOLD = 4096
"""Messages held per source while waiting for an earlier one; past this the gap is given up on."""
SOURCES = 64
"""Sources (page models) remembered; the least recently heard is forgotten first."""

Message = tuple[Any, list[memoryview]]


class Reorder:
    """Holds a source's messages that came early and releases them once the gap is filled.

    Memory is bounded: at most :data:`HOLD` held messages per source, after
    which the missing ones are skipped (a page that lost a POST must not stall
    its bridge forever), and at most :data:`SOURCES` sources.
    """

    def __init__(self) -> None:
        self.next: OrderedDict[str, int] = OrderedDict()
        self.held: dict[str, dict[int, Message]] = {}

    def push(self, content: Any, buffers: list[memoryview]) -> list[Message]:
        """The messages now due, in order: this one, those it unblocked, or none."""
        src = content.get("src") if isinstance(content, dict) else None
        seq = content.get("seq") if isinstance(content, dict) else None
        if not isinstance(src, str) or not isinstance(seq, int) or isinstance(seq, bool):
            return [(content, buffers)]
        expected = self.next.pop(src, 0)
        self.next[src] = expected  # most recently heard last
        if len(self.next) > SOURCES:
            gone, _ = self.next.popitem(last=False)
            self.held.pop(gone, None)
        if seq < expected:  # a repeat, or one whose gap was given up on: do not replay
            return []
        held = self.held.setdefault(src, {})
        held[seq] = (content, buffers)
        due: list[Message] = []
        while True:
            while expected in held:
                due.append(held.pop(expected))
                expected += 1
            if len(held) <= HOLD:
                break
            expected = min(held)
        self.next[src] = expected
        if not held:
            del self.held[src]
        return due
