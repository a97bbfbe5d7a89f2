"""What every framework app shares: a loopback upstream in the app's own process, and the bridge's handlers.

:func:`serve` starts a real uvicorn on 127.0.0.1 (port 0) in a daemon thread
of the framework's process, once per process; it serves ``tests/upstream.py``
plus ``/png``. :func:`info` is the JSON each app shows in an element of class
``loopback-info`` for the tests to read.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
import zlib
from typing import Any

import uvicorn

from comm_bridge import CommBridge, on_request
from loopback_asgi import browser_url, reach

from .. import upstream

__all__ = ["PNG", "info", "serve"]


def _png() -> bytes:
    """A 64×64 RGB gradient, as a PNG (deterministic bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\0" + bytes(v for x in range(64) for v in (x * 4, y * 4, 128)) for y in range(64))
    head = struct.pack(">IIBBBBB", 64, 64, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")


PNG = _png()

_lock = threading.Lock()
_port: list[int] = []


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http" and scope["path"] == "/png":
        headers = [(b"content-type", b"image/png"), (b"content-length", str(len(PNG)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": PNG})
        return
    await upstream.app(scope, receive, send)


def serve() -> int:
    """The port of this process's upstream, started on first call (bounded wait for it to listen)."""
    with _lock:
        if _port:
            return _port[0]
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(1024)
        config = uvicorn.Config(_app, log_level="warning", lifespan="off", ws_max_size=2**31)
        server = uvicorn.Server(config)
        thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
        thread.start()
        for _ in range(500):  # bounded: uvicorn starts within milliseconds
            if server.started:
                break
            threading.Event().wait(0.01)
        else:
            raise RuntimeError("the upstream did not start")
        _port.append(sock.getsockname()[1])
        return _port[0]


def info(port: int, bridge: CommBridge) -> str:
    """What the tests read from the page: the upstream's port, this page's bridge, how the browser reaches it."""
    way = reach("app", port)
    return json.dumps(
        {"port": port, "bridge": bridge.model_id, "how": way.how, "url": browser_url("app", port), "reach": way.url}
    )


@on_request("demo", "echo")
def _echo(data: Any, buffers: list[bytes]) -> Any:
    return {"echo": data, "thread": threading.current_thread().name}, buffers


@on_request("demo", "slow")
def _slow(data: Any, buffers: list[bytes]) -> Any:
    # Longer than the shell thread waits for a handler (comm_bridge.runtime.GRACE), so the
    # reply leaves from this worker thread, not from the framework's own thread.
    threading.Event().wait(0.05)
    return {"echo": data, "thread": threading.current_thread().name}


@on_request("demo", "async")
async def _async(data: Any, buffers: list[bytes]) -> Any:
    await asyncio.sleep(0.01)
    return {"echo": data, "thread": threading.current_thread().name}


@on_request("demo", "bridges")
def _bridges(data: Any, buffers: list[bytes]) -> Any:
    """How many page sessions have a bridge in this process, and how many bridge event loops run."""
    from comm_bridge import widget

    loops = sum(t.name == "comm-bridge-loop" and t.is_alive() for t in threading.enumerate())
    return {"bridges": len(widget._bridges), "loops": loops}
