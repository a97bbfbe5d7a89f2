"""Upstream clients to loopback servers, one per protocol.

- :mod:`.http11`: one HTTP/1.1 connection, an asyncio ``Protocol`` fed to
  httptools' response parser;
- :mod:`.http`: the httpx transport that pools those connections;
- :mod:`.websocket`: one WebSocket connection on websockets' Sans-I/O client;
- :mod:`.splice`: a body moved socket to socket inside the kernel.
"""

__all__: list[str] = []
