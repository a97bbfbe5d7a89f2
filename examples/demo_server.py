"""The demo's small server: a page, JSON, a PNG, a WebSocket echo and an SSE counter.

It runs in the kernel on ``127.0.0.1`` (uvicorn in a thread) and is shown
either through the Jupyter server (``<base_url>loopback/app/<port>/``) or,
where no Jupyter server route exists, through the comm bridge.
"""

from __future__ import annotations

import asyncio
import html
import socket
import struct
import threading
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from loopback_asgi import autodetect_prefix, browser_url

__all__ = ["PAGE", "DemoServer", "png"]

PAGE = (Path(__file__).parent / "demo_page.html").read_text()
HEIGHT = 380
SSE_LIMIT = 3600  # ticks: an open page stops counting after half an hour


def png(width: int = 192, height: int = 96) -> bytes:
    """A colourful RGB PNG whose rows use every byte value (a binary-safety check)."""
    rows = b"".join(
        b"\x00" + bytes(c for x in range(width) for c in (x * 255 // width, y * 255 // height, (x * y) % 256))
        for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")


IMAGE = png()


async def index(request: Request) -> HTMLResponse:
    return HTMLResponse(PAGE)


async def info(request: Request) -> JSONResponse:
    return JSONResponse(
        {
            "message": "Hello from the kernel",
            "image": {"bytes": len(IMAGE), "crc32": zlib.crc32(IMAGE), "width": 192, "height": 96},
        }
    )


async def image(request: Request) -> Response:
    return Response(IMAGE, media_type="image/png")


async def counter(request: Request) -> StreamingResponse:
    async def ticks() -> AsyncIterator[str]:
        for n in range(1, SSE_LIMIT + 1):
            yield f"data: {n}\n\n"
            await asyncio.sleep(0.5)

    return StreamingResponse(ticks(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            await websocket.send_text(await websocket.receive_text())
    except WebSocketDisconnect:
        pass


class DemoServer:
    """The demo app on ``127.0.0.1:<port>``, served by uvicorn in a daemon thread."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen()  # connections queue here until uvicorn accepts them
        self.port: int = self.socket.getsockname()[1]
        routes = [
            Route("/", index),
            Route("/api/info", info),
            Route("/image.png", image),
            Route("/sse", counter),
            WebSocketRoute("/ws", echo),
        ]
        config = uvicorn.Config(Starlette(routes=routes), log_level="warning", timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def start(self) -> DemoServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(5)

    def __repr__(self) -> str:
        return f"<demo server on http://127.0.0.1:{self.port}/>"

    def show(self, via: str = "proxy") -> object:
        """The demo page in an output iframe, ``via`` the Jupyter server proxy or the comm ``"bridge"``."""
        from IPython.display import IFrame

        if via == "bridge":
            # A srcdoc iframe shares the notebook page's origin, so its script
            # can use the bridge the notebook page loaded.
            doc = PAGE.replace("<html", f'<html data-port="{self.port}"', 1)
            frame = f'<iframe srcdoc="{html.escape(doc)}" width="100%" height="{HEIGHT}" frameborder="0"></iframe>'
            return _Html(frame)
        if autodetect_prefix("app") is None:
            return _Html(
                "<p>No Jupyter server route reaches this kernel's servers here (plain Python, VS Code, Colab…):"
                " use the comm bridge below.</p>"
            )
        return IFrame(browser_url("app", self.port), width="100%", height=HEIGHT)


class _Html:
    """Raw HTML for the notebook's output (``IPython.display.HTML`` warns on an iframe)."""

    def __init__(self, html: str) -> None:
        self.html = html

    def _repr_html_(self) -> str:
        return self.html
