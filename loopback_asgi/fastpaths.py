"""Every place this project relies on another library's private state, named once.

A fast path here is code that reads or replaces a private attribute of a
library this project does not own, because the public API has no way to get
the same speed. Each one is listed in :data:`FASTPATHS` with the private
names it touches, the versions of the library it was checked against, and
the figure a user sees it improve. It is taken only when

- the installed version of the library lies in the checked range (read once,
  when the module that uses it is imported), and
- ``JUPYTER_LOOPBACK_FASTPATHS`` does not turn it off: ``off`` turns every
  fast path off, a comma-separated list of names turns those off.

Otherwise the code takes the public path, which gives the same answers,
only slower. Each fast path has a test that it is taken and a test of its
fallback.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import cache
from importlib import metadata

__all__ = ["ENV", "FASTPATHS", "FastPath", "enabled", "version_of"]

ENV = "JUPYTER_LOOPBACK_FASTPATHS"


@dataclass(frozen=True)
class FastPath:
    name: str
    library: str
    """The distribution whose private state it touches."""
    touches: tuple[str, ...]
    """The private names, as ``module.Class.attribute``."""
    lowest: tuple[int, ...]
    """The lowest version it was checked against."""
    below: tuple[int, ...]
    """The first version it was not checked against (the next major or minor release)."""
    gain: str
    """What a user sees it improve, with the figure (docs/benchmarks.md)."""


FASTPATHS: dict[str, FastPath] = {}


def _declare(path: FastPath) -> None:
    FASTPATHS[path.name] = path


def version_of(distribution: str) -> tuple[int, ...] | None:
    """The installed version of ``distribution`` as numbers (``"6.5.2"`` → ``(6, 5, 2)``), or None."""
    try:
        text = metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None
    match = re.match(r"\d+(?:\.\d+)*", text)
    return tuple(int(part) for part in match.group().split(".")) if match else None


def _switched_off(name: str, setting: str) -> bool:
    words = {word.strip().lower() for word in setting.split(",") if word.strip()}
    return "off" in words or name in words


@cache
def enabled(name: str) -> bool:
    """Whether the fast path ``name`` is taken in this process: switched on and checked for this version."""
    path = FASTPATHS[name]
    if _switched_off(name, os.environ.get(ENV, "")):
        return False
    version = version_of(path.library)
    return version is not None and path.lowest <= version < path.below


_declare(
    FastPath(
        name="sidecar_ws_pipe",
        library="uvicorn",
        touches=(
            "uvicorn.protocols.websockets.websockets_sansio_impl.WebSocketsSansIOProtocol.conn",
            "uvicorn.protocols.websockets.websockets_sansio_impl.WebSocketsSansIOProtocol.queue",
            "uvicorn.protocols.websockets.websockets_sansio_impl.WebSocketsSansIOProtocol.data_received",
            "uvicorn.protocols.websockets.websockets_sansio_impl.WebSocketsSansIOProtocol.stop_keepalive",
        ),
        lowest=(0, 52),
        below=(0, 56),
        gain="WS echo p50 0.32 -> 0.28 ms, WS 10 MB round trip 52 -> 35 ms, through Jupyter (run.py --without).",
    )
)

_declare(
    FastPath(
        name="adapter_splice",
        library="tornado",
        touches=(
            "tornado.http1connection.HTTP1Connection._expected_content_remaining",
            "tornado.http1connection.HTTP1Connection._chunking_output",
            "tornado.iostream.BaseIOStream._read_buffer_size",
            "tornado.iostream.BaseIOStream._state",
        ),
        lowest=(6, 4),
        below=(6, 7),
        gain="50 MB GET 960 -> 1,746 MB/s, 1 GB 1,126 -> 1,566 MB/s, through Jupyter (run.py --without).",
    )
)

_declare(
    FastPath(
        name="sidecar_splice",
        library="uvicorn",
        touches=(
            "uvicorn.protocols.http.httptools_impl.RequestResponseCycle.response_started",
            "uvicorn.protocols.http.httptools_impl.RequestResponseCycle.chunked_encoding",
            "uvicorn.protocols.http.httptools_impl.RequestResponseCycle.expected_content_length",
            "uvicorn.protocols.http.httptools_impl.RequestResponseCycle.transport",
        ),
        lowest=(0, 52),
        below=(0, 56),
        gain="50 MB GET 875 -> 1,746 MB/s, 1 GB 1,028 -> 1,566 MB/s, through Jupyter (run.py --without).",
    )
)


_declare(
    FastPath(
        name="adapter_ws_pipe",
        library="tornado",
        touches=(
            "tornado.websocket.WebSocketProtocol13.__class__",
            "tornado.websocket.WebSocketProtocol13._receive_frame_loop",
            "tornado.websocket.WebSocketProtocol13._compressor",
            "tornado.websocket.WebSocketProtocol13._decompressor",
        ),
        lowest=(6, 4),
        below=(6, 7),
        gain="WS echo p50 0.36 -> 0.28 ms, WS 10 MB round trip 60 -> 35 ms, through Jupyter (run.py --without).",
    )
)
