"""The server side of ``jupyter-loopback serve``: uvicorn's protocols, extended.

:mod:`.http` (big bodies spliced) and
:mod:`.websocket` (a session handed to a byte pipe) declare the ASGI scope
extensions the sidecar app may use; under another ASGI server the app never
asks for them.
"""

__all__: list[str] = []
