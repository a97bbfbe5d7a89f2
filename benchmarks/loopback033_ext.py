"""A minimal jupyter_server extension that mounts jupyter-loopback 0.3.3's route for the benchmark.

0.3.3 ships no extension of its own: a library calls its
``setup_proxy_handler(web_app, namespace)`` from the library's extension.
This module plays that library, with the namespace ``bench``, so the route
is ``<base_url>bench-proxy/<port>/<path>``. It runs only inside
``benchmarks/.bench-venv-http``.
"""

from __future__ import annotations

from typing import Any

NAMESPACE = "bench"


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "loopback033_ext"}]


def _load_jupyter_server_extension(server_app: Any) -> None:
    from jupyter_loopback import setup_proxy_handler

    setup_proxy_handler(server_app.web_app, NAMESPACE)
