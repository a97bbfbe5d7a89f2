"""Which page session a bridge serves, and how its messages reach that page.

In Jupyter, VS Code and Colab one kernel process serves one notebook, so one
bridge per process is right. marimo (``marimo run``), Solara and Shiny serve
many browser sessions from one Python process, each with its own comms: a
bridge made in one session must answer only that session's page. The
session is read from the framework that is running the caller, never from
environment variables:

- marimo: the runtime context of the session's kernel (``marimo run`` runs
  one kernel thread per browser tab);
- Solara: the virtual kernel context of the page;
- Shiny: the root of the current ``Session``;
- anything else: the process.

Only frameworks already imported are asked; none is imported here.

Sending is the framework's business too. ipykernel, Solara and marimo
(0.23.14 and later: the comm keeps its session's stream) accept a comm send
from any thread. Shiny's comm (shinywidgets) sends only inside the session's
context and at the next reactive flush, so for Shiny every message is moved
onto Shiny's event loop, in order, and sent there at once (see
:class:`ShinySession`).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

__all__ = ["PROCESS", "Session", "ShinySession", "current_session"]

log = logging.getLogger("comm_bridge")

Buffers = Sequence[bytes | memoryview]


class _Sender(Protocol):
    def send(self, content: dict[str, Any], buffers: list[bytes | memoryview] | None = None) -> None: ...


class Session:
    """One page session: ``key`` tells sessions apart, :meth:`send` reaches its page from any thread."""

    name = "process"

    def __init__(self, key: object = None) -> None:
        # The object itself is kept (not only its id), so its id cannot be reused while a bridge lives.
        self.owner = key
        self.key: tuple[str, int] = (self.name, id(key))

    def send(self, widget: _Sender, content: dict[str, Any], buffers: Buffers) -> None:
        widget.send(content, list(buffers) or None)

    def on_end(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` when the session ends, where the framework says so."""


PROCESS = Session()
"""The one session of a plain kernel (Jupyter, VS Code, Colab, a script)."""


class MarimoSession(Session):
    name = "marimo"


class SolaraSession(Session):
    name = "solara"

    def on_end(self, fn: Callable[[], None]) -> None:
        self.owner.on_close(fn)  # type: ignore[attr-defined]


class ShinySession(Session):
    """A Shiny session: messages leave from Shiny's loop, inside the session, in the order posted.

    shinywidgets' comm sends through ``get_current_session()`` and queues each
    message for the session's next reactive flush, which only comes when the
    page sends something. Here the comm runs inside a context whose session
    collects those queued sends instead; one task on Shiny's loop then
    awaits them one by one, so they leave at once, in order, exactly once,
    whichever thread posted them.
    """

    name = "shiny"

    def __init__(self, session: Any, loop: asyncio.AbstractEventLoop, context: Callable[[Any], Any]) -> None:
        super().__init__(session)
        self.shiny = session
        self.loop = loop
        self.context = context
        self.outbox: deque[Callable[[], Awaitable[None]]] = deque()
        self.draining = False
        self.collector = _Collector(session, self.outbox)

    def send(self, widget: _Sender, content: dict[str, Any], buffers: Buffers) -> None:
        # call_soon_threadsafe keeps each thread's order; the loop runs callbacks FIFO.
        try:
            self.loop.call_soon_threadsafe(self._emit, widget, content, list(buffers))
        except RuntimeError:  # the loop closed: the session is gone, so is its page
            return

    def _emit(self, widget: _Sender, content: dict[str, Any], buffers: list[bytes | memoryview]) -> None:
        with self.context(self.collector):
            widget.send(content, buffers or None)
        if not self.draining:
            self.draining = True
            self.loop.create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while self.outbox:
                try:
                    await self.outbox.popleft()()
                except Exception as exc:  # the page left (socket closed): nothing more can reach it
                    log.debug("comm_bridge: a message to a Shiny session failed (%s); dropping the rest", exc)
                    self.outbox.clear()
        finally:
            self.draining = False

    def on_end(self, fn: Callable[[], None]) -> None:
        self.shiny.on_ended(fn)


class _Collector:
    """The Shiny session as the comm sees it while sending: its flush callbacks go to ``outbox``."""

    def __init__(self, session: Any, outbox: deque[Callable[[], Awaitable[None]]]) -> None:
        self._session = session
        self._outbox = outbox

    def on_flush(self, fn: Callable[[], Awaitable[None]], once: bool = True) -> Callable[[], None]:
        self._outbox.append(fn)
        return lambda: None

    on_flushed = on_flush

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


def current_session() -> Session:
    """The page session the caller runs in; :data:`PROCESS` outside marimo, Solara and Shiny."""
    return _shiny() or _solara() or _marimo() or PROCESS


def _shiny() -> Session | None:
    module = sys.modules.get("shiny.session")
    if module is None:
        return None
    session = module.get_current_session()
    if session is None or session.is_stub_session():
        return None
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None  # a Shiny session is only ever current on its own loop
    return ShinySession(session.root_scope(), loop, module.session_context)


def _solara() -> Session | None:
    module = sys.modules.get("solara.server.kernel_context")
    if module is None:
        return None
    try:
        if not module.has_current_context():
            return None
        return SolaraSession(module.get_current_context())
    except RuntimeError:  # no context set for this thread or task
        return None


def _marimo() -> Session | None:
    module = sys.modules.get("marimo._runtime.context")
    if module is None:
        return None
    context = module.safe_get_context()
    return None if context is None else MarimoSession(context)
