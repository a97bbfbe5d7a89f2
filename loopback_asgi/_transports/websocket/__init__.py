"""One WebSocket client to loopback upstreams: websockets' Sans-I/O ``ClientProtocol`` on an asyncio ``Protocol``.

- :mod:`.opening`: :func:`open_upstream`, the handshake; it returns only
  after a successful one.
- :mod:`.connection`: what both modes share: the socket, reading (whole
  small frames split off here, the rest through websockets' parser),
  keepalive pings, the closing handshake.
- :mod:`.messages`: :class:`Upstream`, message mode (the sidecar's relay,
  the Jupyter adapter's leg to the sidecar; :meth:`Upstream.detach` for the
  byte pipe).
- :mod:`.frame_mode`: :class:`FrameUpstream`, frame mode
  (``open_upstream(..., frames=True)``, the comm bridge's leg): data frames
  out on the loop, in from any thread.

Neither mode runs a task of its own: a relayed message costs one wakeup on
each side.
"""

from loopback_asgi._transports.websocket.connection import Closed, Connection
from loopback_asgi._transports.websocket.frame_mode import DataFrame, FrameUpstream
from loopback_asgi._transports.websocket.messages import Upstream
from loopback_asgi._transports.websocket.opening import open_upstream

__all__ = ["Closed", "Connection", "DataFrame", "FrameUpstream", "Upstream", "open_upstream"]
