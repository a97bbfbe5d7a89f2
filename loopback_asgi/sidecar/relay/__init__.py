"""The two relays of the sidecar app: :mod:`.http` and :mod:`.websocket`."""

__all__: list[str] = []
