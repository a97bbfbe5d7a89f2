"""jupyter-loopback: reach servers a Jupyter kernel runs on 127.0.0.1 from the browser."""

from __future__ import annotations

from typing import Any

__version__ = "0.4.0.dev0"

from .app import create_app  # noqa: E402
from .kernel import autodetect_prefix, browser_url  # noqa: E402
from .namespaces import Namespace, Policy, PortPolicy  # noqa: E402

__all__ = [
    "Namespace",
    "Policy",
    "PortPolicy",
    "__version__",
    "autodetect_prefix",
    "browser_url",
    "create_app",
    "setup_proxy_handler",
]


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    # jupyter_server's entry point; the adapter module is imported only when
    # a server loads it, so kernels stay light.
    return [{"module": "loopback_asgi.jupyter"}]


def __getattr__(name: str) -> Any:
    # The Jupyter adapter pulls in jupyter_server and tornado: import it only
    # when asked, so kernels and standalone sidecars stay light.
    if name == "setup_proxy_handler":
        from .jupyter import setup_proxy_handler

        return setup_proxy_handler
    raise AttributeError(f"module 'loopback_asgi' has no attribute {name!r}")
