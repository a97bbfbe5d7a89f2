"""Upstream clients to loopback servers, one per protocol.

- :mod:`.http11`: HTTP/1.1 on the wire: request heads and body framing
  written, responses parsed by httptools;
- :mod:`.http_connection`: one keep-alive HTTP/1.1 connection, an asyncio
  ``Protocol``;
- :mod:`.http`: the httpx transport that pools those connections;
- :mod:`.flow`: write-side flow control both clients' protocols share;
- :mod:`.websocket`: one WebSocket client on websockets' Sans-I/O protocol,
  in message mode or frame mode;
- :mod:`.frames`: WebSocket frame bytes;
- :mod:`.pipe`: a WebSocket session passed through as bytes;
- :mod:`.splice`: a body moved socket to socket inside the kernel.
"""

__all__: list[str] = []
