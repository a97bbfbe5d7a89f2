"""The public names are exactly what the README and SPEC promise."""

from __future__ import annotations

import importlib

import pytest

import loopback_asgi

PROMISED = {
    "Namespace",
    "Policy",
    "PortPolicy",
    "__version__",
    "autodetect_prefix",
    "browser_url",
    "create_app",
    "setup_proxy_handler",
}


def test_loopback_asgi_exports() -> None:
    assert set(loopback_asgi.__all__) == PROMISED
    for name in PROMISED:
        assert getattr(loopback_asgi, name) is not None


@pytest.mark.parametrize(
    "module",
    ["app", "http", "websocket", "headers", "namespaces", "target", "errors", "kernel", "cli", "types"],
)
def test_every_public_module_declares_all(module: str) -> None:
    mod = importlib.import_module(f"loopback_asgi.{module}")
    assert mod.__all__
    for name in mod.__all__:
        assert hasattr(mod, name), f"loopback_asgi.{module}.{name}"
