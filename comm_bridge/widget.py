"""The bridge widget, the handler registry and request dispatch.

``enable_comm_bridge()`` displays one :class:`CommBridge`; its ES module
(``static/bridge.js``) installs ``window.__jupyter_loopback__`` in the page.
Requests from the page are answered by the handlers registered with
:func:`on_request`; generic fetch and WebSocket traffic goes to
:mod:`comm_bridge.streams`.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anywidget
import traitlets

from .order import Reorder
from .protocol import CHUNK, FRAME_COST
from .runtime import GRACE, Runtime
from .sessions import Session, current_session
from .streams import Streams

__all__ = [
    "CommBridge",
    "Handler",
    "current_bridge",
    "enable_comm_bridge",
    "is_comm_bridge_enabled",
    "off_request",
    "on_request",
]

log = logging.getLogger("comm_bridge")

Handler = Callable[[Any, list[bytes]], Any]
"""``handler(data, buffers)`` returns JSON ``data`` or ``(data, [bytes, …])``, or a coroutine of either."""
H = TypeVar("H", bound=Handler)

DEFAULT_TIMEOUT = 60.0

_handlers: dict[tuple[str, str], tuple[Handler, float | None, bool]] = {}
_lock = threading.Lock()
_bridges: dict[tuple[str, int], CommBridge] = {}
"""The live bridge of each page session (:mod:`comm_bridge.sessions`): one per kernel in Jupyter."""


def on_request(namespace: str, kind: str, *, timeout: float | None = None, inline: bool = False) -> Callable[[H], H]:
    """Register the handler for ``request(namespace, kind, …)`` from the page; use as a decorator.

    The handler runs on a worker thread (sync) or the bridge's event loop
    (``async def``), never on the kernel's shell thread. It gets the request's
    JSON ``data`` and its ``buffers`` as ``bytes``. A raising handler, one
    that outlives ``timeout`` seconds (default: the bridge's, 60 s) or one
    returning something that is not JSON answers ``status: "error"`` with one
    sentence; the kernel keeps working. Registering the same pair again
    replaces the handler.

    ``inline=True`` runs a sync handler on the shell thread instead, as a
    plain widget's ``on_msg`` does: no thread handoff, so the lowest
    latency, but cells and other requests wait while it runs and no timeout
    applies. Only for handlers that take microseconds.
    """
    if not (isinstance(namespace, str) and namespace and isinstance(kind, str) and kind):
        raise ValueError("namespace and kind must be non-empty strings")

    def register(handler: H) -> H:
        if inline and inspect.iscoroutinefunction(handler):
            raise ValueError("an async handler cannot run inline")
        with _lock:
            _handlers[(namespace, kind)] = (handler, timeout, inline)
        return handler

    return register


def off_request(namespace: str, kind: str) -> bool:
    """Remove a handler; ``True`` if there was one. Requests already running finish."""
    with _lock:
        return _handlers.pop((namespace, kind), None) is not None


class CommBridge(anywidget.AnyWidget):
    """The anywidget behind ``window.__jupyter_loopback__``. Get it from :func:`enable_comm_bridge`."""

    _esm = Path(__file__).parent / "static" / "bridge.js"

    intercepted_ports = traitlets.List(traitlets.Int()).tag(sync=True)
    """Loopback ports whose ``http://127.0.0.1:<port>`` URLs every view of the page reroutes."""
    intercepted_prefixes = traitlets.Dict(key_trait=traitlets.Unicode(), value_trait=traitlets.Unicode()).tag(sync=True)
    """``{str(port): "/base/ns-proxy/<port>"}``: the same-origin route to try before the comm."""

    def __init__(
        self, *, ports: object = None, timeout: float = DEFAULT_TIMEOUT, session: Session | None = None, **kwargs: Any
    ) -> None:
        # Before the comm opens: the framework may deliver a message as soon as it does.
        self.session = current_session() if session is None else session
        self.order = Reorder()
        super().__init__(**kwargs)
        self.timeout = timeout
        self.runtime = Runtime()
        self.streams = Streams(self.post, self.runtime, ports)
        self.requests: dict[int, _Reply] = {}
        self.gathering: dict[int, tuple[dict[str, Any], list[int], list[bytes]]] = {}
        self.on_msg(self._on_msg)

    def add_intercepted_port(self, port: int) -> None:
        """Have every view reroute ``http://127.0.0.1:<port>`` and ``localhost:<port>``; idempotent."""
        if port not in self.intercepted_ports:
            # A new list: traitlets syncs on assignment, not on in-place change.
            self.intercepted_ports = [*self.intercepted_ports, port]

    def add_intercepted_prefix(self, port: int, prefix: str) -> None:
        """Have the page try the same-origin route ``prefix`` for ``port`` before the comm; idempotent."""
        prefix = prefix.rstrip("/")
        if prefix and self.intercepted_prefixes.get(str(port)) != prefix:
            self.intercepted_prefixes = {**self.intercepted_prefixes, str(port): prefix}

    def post(self, content: dict[str, Any], buffers: Sequence[bytes | memoryview] = ()) -> None:
        """Send one message to the page; safe from any thread, in each thread's order.

        The session decides how: ipykernel queues IOPub sends from any thread;
        Shiny's are moved onto Shiny's loop (:mod:`comm_bridge.sessions`).
        """
        self.session.send(self, content, buffers)

    @property
    def live(self) -> bool:
        """Whether the comm is open (marimo closes it on a cell's re-run but leaves ``comm`` set)."""
        return self.comm is not None and not getattr(self.comm, "_closed", False)

    def close(self) -> None:
        """Close the comm, cancel every stream and stop the bridge's threads."""
        super().close()
        session = getattr(self, "session", None)
        with _lock:
            if session is not None and _bridges.get(session.key) is self:
                del _bridges[session.key]
        runtime = getattr(self, "runtime", None)  # absent if __init__ failed
        if runtime is not None and not runtime.loop.is_closed():
            runtime.spawn(self.streams.aclose()).result(10)
            runtime.close()

    def _on_msg(self, _widget: object, content: Any, buffers: list[memoryview]) -> None:
        # marimo posts each page message separately, so they may arrive out of order.
        for message, parts in self.order.push(content, buffers):
            self._handle(message, parts)

    def _handle(self, content: Any, buffers: list[memoryview]) -> None:
        # The shell thread: parse and hand off, nothing slow here.
        if not isinstance(content, dict) or not isinstance(content.get("id"), int):
            log.debug("comm_bridge: ignoring a message without an integer id: %r", content)
            return
        op = content.get("op")
        try:
            if op == "cancel" and content["id"] in self.requests:
                self.requests[content["id"]].cancel()
            elif op == "request" and "sizes" in content:
                # Buffers over CHUNK follow in ``body`` messages.
                self.gathering[content["id"]] = (content, [int(n) for n in content["sizes"]], [])
            elif op == "body" and content["id"] in self.gathering:
                self._gather(content, buffers)
            elif op == "request":
                self._request(content, [bytes(b) for b in buffers])
            else:
                self.streams.handle(op, content, buffers)
        except (KeyError, TypeError, ValueError) as exc:
            self.post({"op": "error", "id": content["id"], "status": 400, "message": f"Bad message: {exc}"})

    def _gather(self, body: dict[str, Any], buffers: list[memoryview]) -> None:
        msg, sizes, parts = self.gathering[body["id"]]
        parts.extend(bytes(b) for b in buffers)
        self.post({"op": "credit", "id": body["id"], "bytes": sum(len(b) + FRAME_COST for b in buffers)})
        if not body.get("end"):
            return
        del self.gathering[body["id"]]
        whole = b"".join(parts)
        if len(whole) != sum(sizes) or min(sizes, default=0) < 0:
            raise ValueError("the request's buffers do not add up to their sizes")
        offsets = list(itertools.accumulate(sizes, initial=0))
        self._request(msg, [whole[a:b] for a, b in itertools.pairwise(offsets)])

    def _request(self, msg: dict[str, Any], buffers: list[bytes]) -> None:
        reply = _Reply(self, msg["id"])
        key = (str(msg["ns"]), str(msg["kind"]))
        with _lock:
            entry = _handlers.get(key)
        if entry is None:
            return reply.error(f"No handler is registered for {key[0]!r}/{key[1]!r}.")
        handler, timeout, inline = entry
        timeout = self.timeout if timeout is None else timeout
        self.requests[reply.id] = reply
        data = msg.get("data")
        if inline:
            _run_sync(reply, handler, data, buffers, timeout, key)
        elif inspect.iscoroutinefunction(handler):
            reply.task = self.runtime.spawn(_run_async(reply, handler(data, buffers), timeout, key))
        else:
            # The deadline first: once the worker is woken, this thread should
            # let go of the GIL at once.
            self.runtime.deadlines.add(timeout, lambda: reply.expire(timeout, key))
            reply.waiting = True
            done = self.runtime.submit(_run_sync, reply, handler, data, buffers, timeout, key)
            # Step aside for a moment: a fast handler then answers before ipykernel
            # publishes this message's idle status, instead of queueing behind
            # it for the GIL; a slow one costs the shell thread at most GRACE.
            done.acquire(timeout=GRACE)
            # A result that came within GRACE is sent from here, as a plain
            # widget's on_msg sends: this thread's caches are warm and the
            # worker, IOPub and shell threads do not fight over the GIL for it
            # (measured: about 0.3 ms less kernel CPU per request).
            if (result := reply.stop_waiting()) is not None:
                reply.ok(result[0])


class _Reply:
    """Sends exactly one reply per request, whichever of result, timeout or cancel comes first."""

    def __init__(self, bridge: CommBridge, id: int) -> None:
        self.bridge = bridge
        self.id = id
        self.done = False
        self.lock = threading.Lock()
        self.task: Any = None
        self.waiting = False
        """Whether the shell thread still waits to send a fast handler's result itself."""
        self.result: tuple[object] | None = None

    def hand_back(self, result: object) -> bool:
        """Leave ``result`` for the shell thread if it still waits; ``False`` if the caller must send it."""
        with self.lock:
            if self.waiting:
                self.result = (result,)
                return True
        return False

    def stop_waiting(self) -> tuple[object] | None:
        """The shell thread stops waiting; the result the worker left, if any."""
        with self.lock:
            self.waiting = False
            return self.result

    def _claim(self) -> bool:
        with self.lock:
            if self.done:
                return False
            self.done = True
        self.bridge.requests.pop(self.id, None)
        return True

    def ok(self, result: object) -> None:
        data, buffers = result if isinstance(result, tuple) and len(result) == 2 else (result, ())
        try:
            out = [memoryview(b) for b in buffers or ()]
        except TypeError:
            return self.error("The handler's buffers must be bytes-like.")
        if not self._claim():
            return
        reply = {"op": "reply", "id": self.id, "status": "ok", "data": data}
        total = sum(b.nbytes for b in out)
        try:
            if total <= CHUNK:
                return self.bridge.post(reply, out)
            # Larger buffers follow in CHUNK pieces, as everything else on this comm.
            self.bridge.post({**reply, "sizes": [b.nbytes for b in out]})
        except (TypeError, ValueError) as exc:
            return self._send_error(f"The handler's reply is not JSON: {exc}.")
        whole = memoryview(b"".join(out))
        for at in range(0, total, CHUNK):
            self.bridge.post({"op": "data", "id": self.id, "end": at + CHUNK >= total}, [whole[at : at + CHUNK]])

    def error(self, message: str) -> None:
        if self._claim():
            self._send_error(message)

    def _send_error(self, message: str) -> None:
        self.bridge.post({"op": "reply", "id": self.id, "status": "error", "data": {"message": message}})

    def expire(self, timeout: float, key: tuple[str, str]) -> None:
        self.error(f"The handler for {key[0]!r}/{key[1]!r} did not answer within {timeout:g} s.")

    def cancel(self) -> None:
        if self._claim() and self.task is not None:
            self.task.cancel()


def _run_sync(reply: _Reply, handler: Handler, data: Any, buffers: list[bytes], timeout: float, key: Any) -> None:
    if reply.done:
        return
    try:
        result = handler(data, buffers)
        if inspect.isawaitable(result):
            reply.task = reply.bridge.runtime.spawn(_run_async(reply, result, timeout, key))
            return
    except Exception as exc:  # a handler's bug becomes the page's error, not the kernel's
        log.debug("comm_bridge: handler %s/%s raised", *key, exc_info=True)
        return reply.error(f"The handler for {key[0]!r}/{key[1]!r} raised {type(exc).__name__}: {exc}")
    if not reply.hand_back(result):
        reply.ok(result)


async def _run_async(reply: _Reply, awaitable: Awaitable[Any], timeout: float, key: Any) -> None:
    try:
        result = await asyncio.wait_for(awaitable, timeout)
    except asyncio.TimeoutError:
        return reply.expire(timeout, key)
    except asyncio.CancelledError:
        return None
    except Exception as exc:
        log.debug("comm_bridge: handler %s/%s raised", *key, exc_info=True)
        return reply.error(f"The handler for {key[0]!r}/{key[1]!r} raised {type(exc).__name__}: {exc}")
    reply.ok(result)


def is_comm_bridge_enabled() -> bool:
    """Whether this kernel (in marimo, Solara, Shiny: this page session) has a live bridge."""
    return current_bridge() is not None


def current_bridge() -> CommBridge | None:
    """The live bridge of this kernel or page session, if :func:`enable_comm_bridge` started one."""
    bridge = _bridges.get(current_session().key)
    return bridge if bridge is not None and bridge.live else None


def enable_comm_bridge(*, display: bool = True, ports: object = None, timeout: float = DEFAULT_TIMEOUT) -> CommBridge:
    """Start the bridge once per kernel and display it once; later calls return the same bridge.

    ``ports`` is the port policy for generic ``fetch``/``openWebSocket``
    (default ``"1024-65535"``, any spelling :class:`loopback_asgi.PortPolicy`
    accepts), narrowed by ``JUPYTER_LOOPBACK_ALLOWED_PORTS``; disabling the
    ``app`` namespace (``JUPYTER_LOOPBACK_DISABLED_NAMESPACES=app``) turns
    generic access off while registered handlers keep working. ``timeout`` is
    the default handler deadline in seconds. A bridge that was closed is
    replaced by a new one.

    Where one process serves many pages (marimo, Solara, Shiny), each page
    session gets its own bridge: its replies reach only that page, sent the
    way the framework requires (:mod:`comm_bridge.sessions`); the bridge is
    closed when the framework ends the session. ``display`` shows it with
    IPython's ``display`` (Jupyter, VS Code, Colab); elsewhere show the
    returned widget as the framework shows any widget.
    """
    session = current_session()
    with _lock:
        old = _bridges.get(session.key)
        if old is not None and old.live:
            return old
        _bridges[session.key] = bridge = CommBridge(ports=ports, timeout=timeout, session=session)
    if old is not None:
        old.close()  # its comm is gone (a re-run marimo cell): stop its threads
    session.on_end(bridge.close)
    if display:
        from IPython.display import display as show

        show(bridge)  # type: ignore[no-untyped-call]
    return bridge
