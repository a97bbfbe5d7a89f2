"""WebSocket frame bytes (RFC 6455 §5.2), written and followed in one place.

Building whole frames (:func:`client_frame`, :func:`server_frame`), close
payloads and the close codes to relay (:func:`close_payload`,
:func:`close_code`), and reading frame headers (:func:`frame_head`,
:class:`FrameCursor`). Everything else about the protocol (handshakes,
validation, fragments, pings) is websockets' Sans-I/O code; these are the
few byte-level helpers the relays need around it.
"""

from __future__ import annotations

import os
import struct

try:  # websockets' C masking, as websockets itself picks it
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - a build without the C extension
    from websockets.utils import apply_mask

__all__ = [
    "RESERVED_CLOSE",
    "FrameCursor",
    "client_frame",
    "client_frame_head",
    "close_code",
    "close_payload",
    "cut_reason",
    "frame_head",
    "server_frame",
]


def client_frame_head(opcode: int, n: int) -> bytes:
    """The first bytes of a final, masked client frame of ``n`` payload bytes, up to its mask (RFC 6455 §5.2)."""
    if n < 126:
        return bytes((0x80 | opcode, 0x80 | n))
    if n < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 0xFE, n)
    return struct.pack("!BBQ", 0x80 | opcode, 0xFF, n)


def client_frame(opcode: int, payload: bytes | bytearray | memoryview) -> bytes:
    """One whole masked client frame; ``payload`` is any buffer, masked without a copy of its own.

    Data frames are written here rather than through the protocol's
    ``send_text``/``send_binary``, which build the same bytes through a
    ``Frame`` object and its checks: the relay only ever sends whole
    messages while the connection is open, which is all those checks guard.
    """
    mask = os.urandom(4)
    return client_frame_head(opcode, len(payload)) + mask + apply_mask(payload, mask)


def close_payload(code: int, reason: str) -> bytes:
    """A close frame's payload: the code, then ``reason`` cut to 123 bytes at a character boundary.

    RFC 6455 §5.5 allows 125 bytes in a control frame, and §5.5.1 wants the
    reason valid UTF-8: a cut inside a character would make the peer fail the
    connection instead of reading the close.
    """
    return struct.pack("!H", code) + cut_reason(reason).encode()


# Close codes a peer must never send (RFC 6455 §7.4.1); "no status" is relayed as none.
RESERVED_CLOSE: dict[int, int | None] = {1005: None, 1006: 1011, 1015: 1011}


def close_code(code: int | None) -> int | None:
    """The code to relay for a close received with ``code``: None (no status) for none or 1005, 1011 for 1006/1015."""
    return RESERVED_CLOSE.get(code, code) if code is not None else None


def cut_reason(reason: str) -> str:
    """``reason`` cut to 123 UTF-8 bytes at a character boundary (see :func:`close_payload`)."""
    encoded = reason.encode()
    return encoded[:123].decode("utf-8", "ignore") if len(encoded) > 123 else reason


def server_frame(opcode: int, payload: bytes | bytearray | memoryview) -> bytes:
    """One whole unmasked server frame (RFC 6455 §5.2)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, n))
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + payload


def frame_head(head: bytes | bytearray) -> tuple[int, int] | None:
    """The header length (mask included) and payload length of the frame starting ``head``; None until whole."""
    if len(head) < 2:
        return None
    b1 = head[1]
    n = b1 & 0x7F
    need = (4 if n == 126 else 10 if n == 127 else 2) + (4 if b1 & 0x80 else 0)
    if len(head) < need:
        return None
    if n == 126:
        n = int.from_bytes(head[2:4], "big")
    elif n == 127:
        n = int.from_bytes(head[2:10], "big")
    return need, n


class FrameCursor:
    """Follows frame boundaries in one direction of a WebSocket stream, without copying payloads."""

    __slots__ = ("close_seen", "head", "left", "limit", "message")

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.head = b""  # a frame header not yet whole
        self.left = 0  # payload bytes of the current frame still to pass
        self.message = 0  # payload bytes of the current message so far
        self.close_seen = False

    @property
    def at_boundary(self) -> bool:
        return not self.left and not self.head

    def feed(self, data: bytes) -> int | None:
        """Follow ``data``. None if it may all pass; else where a frame over the limit starts in it (or -1:
        it started in an earlier piece)."""
        pos, size = 0, len(data)
        while pos < size:
            if self.left:
                step = min(self.left, size - pos)
                self.left -= step
                pos += step
                continue
            start = pos - len(self.head)
            head = self.head + data[pos : pos + 14]
            parsed = frame_head(head)
            if parsed is None:
                self.head = head  # the rest of ``data`` is all in it
                return None
            need, n = parsed
            opcode = head[0] & 0x0F
            if opcode == 0x8:
                self.close_seen = True
            elif opcode < 0x8 and self.limit is not None:
                self.message = n if opcode else self.message + n
                if self.message > self.limit:
                    self.head = b""
                    return start if start >= 0 else -1
            pos += need - len(self.head)
            self.head = b""
            self.left = n
        return None
