"""jupyter-loopback: reach servers a Jupyter kernel runs on 127.0.0.1 from the browser.

Light to import: a kernel's ``from loopback_asgi import browser_url`` loads the
kernel-side helpers and namespace declarations only. ``create_app`` (Starlette,
httpx, websockets) and ``setup_proxy_handler`` (jupyter_server, tornado) are
imported on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.4.0.dev0"

from loopback_asgi.kernel import autodetect_prefix, browser_url  # noqa: E402
from loopback_asgi.namespaces import Namespace, Policy, PortPolicy  # noqa: E402
from loopback_asgi.reach import Reach, reach  # noqa: E402

__all__ = [
    "Namespace",
    "Policy",
    "PortPolicy",
    "Reach",
    "__version__",
    "autodetect_prefix",
    "browser_url",
    "create_app",
    "mount_into",
    "reach",
    "setup_proxy_handler",
]

# Names whose modules are imported on first access: name -> submodule.
_LAZY = {"create_app": "sidecar.app", "mount_into": "mount", "setup_proxy_handler": "jupyter.extension"}


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    # jupyter_server's entry point; the adapter module is imported only when
    # a server loads it, so kernels stay light.
    return [{"module": "loopback_asgi.jupyter"}]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'loopback_asgi' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
