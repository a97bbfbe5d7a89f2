"""``jupyter-loopback doctor``: what this environment is and whether the route works.

Prints, one finding per line: the environment kind, the declared namespaces
(and those that failed to load), whether the jupyter_server extension is
enabled, whether kernel websockets run with ``TCP_NODELAY``
(``c.Loopback.kernel_websocket_nodelay`` in the configuration files and on a
running server's command line), the URL a kernel here would get, and, for
each running jupyter-server this user can see, a live round trip through
``<base_url>loopback/app/<port>/`` to a throwaway server on 127.0.0.1.
Never raises: every section reports its own failure in one sentence; the
exit status is 0.
"""

from __future__ import annotations

import http.server
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from loopback_asgi import __version__
from loopback_asgi.kernel import announced_route, autodetect_prefix
from loopback_asgi.namespaces import Policy, load_namespaces

__all__ = ["doctor", "environment_kind"]

PROBE = b"jupyter-loopback doctor probe"


def environment_kind(environ: Mapping[str, str] | None = None) -> str:
    """A short description of where this process runs."""
    env = os.environ if environ is None else environ
    if "COLAB_RELEASE_TAG" in env or "google.colab" in sys.modules:
        return "Google Colab (no jupyter-server route; use the comm bridge)"
    if announced_route(env) is not None:
        return "a kernel of a jupyter-server with the loopback adapter"
    if "VSCODE_PID" in env or "VSCODE_CWD" in env:
        return "VS Code (local kernels have no jupyter-server route; use the comm bridge)"
    if "JUPYTERHUB_SERVICE_PREFIX" in env:
        return f"a JupyterHub single-user environment ({env['JUPYTERHUB_SERVICE_PREFIX']})"
    if "JPY_PARENT_PID" in env:
        return "a Jupyter kernel whose server announced no loopback route"
    return "plain Python (not a Jupyter kernel)"


def _section(title: str, body: Callable[[], list[str]]) -> None:
    try:
        lines = body()
    except Exception as exc:  # a diagnosis must report, never crash
        lines = [f"could not check: {type(exc).__name__}: {exc}"]
    print(f"{title}:")
    for line in lines:
        print(f"  {line}")


def _namespaces() -> list[str]:
    served, failures = load_namespaces(policy=Policy.from_env())
    lines = [f"{name}: ports {ns.ports}, host {ns.host}" for name, ns in sorted(served.items())]
    lines += [f"{name}: FAILED to load: {reason}" for name, reason in sorted(failures.items())]
    return lines or ["none declared"]


def _enabled() -> bool | None:
    from jupyter_core.paths import jupyter_config_path
    from jupyter_server.extension.config import ExtensionConfigManager

    manager = ExtensionConfigManager(read_config_path=jupyter_config_path())
    enabled: bool | None = manager.get_jpserver_extensions().get("loopback_asgi")  # type: ignore[no-untyped-call]
    return enabled


def _extension() -> list[str]:
    enabled = _enabled()
    if enabled:
        return ["loopback_asgi is enabled for jupyter-server"]
    state = "disabled" if enabled is False else "not enabled"
    return [f"loopback_asgi is {state}: run `jupyter server extension enable loopback_asgi`"]


def _nodelay_said(config: Any) -> str:
    from loopback_asgi.jupyter.extension import Loopback

    on = Loopback(config=config).kernel_websocket_nodelay
    source = "set" if "kernel_websocket_nodelay" in config.get("Loopback", {}) else "the default"
    return f"{'on' if on else 'OFF'} (c.Loopback.kernel_websocket_nodelay = {on}, {source})"


def _nodelay() -> list[str]:
    """Nagle on the kernel websockets: this configuration, and each running server's command line."""
    from jupyter_server.serverapp import ServerApp, list_running_servers
    from traitlets.config.loader import Config, KVArgParseConfigLoader

    app = ServerApp()
    app.load_config_file()
    lines = [f"servers started with this configuration: {_nodelay_said(app.config)}"]
    if not _enabled():
        lines[0] = "inactive: the loopback_asgi extension is not enabled"
    for info in list_running_servers():
        try:
            with open(f"/proc/{info.get('pid')}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0")]
        except OSError:
            continue  # not Linux, or not this user's process: the configuration line stands
        at = [i for i, a in enumerate(argv) if a.startswith("--Loopback.kernel_websocket_nodelay")]
        flags = [part for i in at for part in (argv[i : i + 1] if "=" in argv[i] else argv[i : i + 2])]
        if flags:
            config = Config()
            config.merge(app.config)
            config.merge(KVArgParseConfigLoader(flags).load_config())
            lines.append(f"pid {info.get('pid')}, from its command line: {_nodelay_said(config)}")
    return lines


def _kernel_url() -> list[str]:
    prefix = autodetect_prefix("app")
    if prefix is None:
        return ['autodetect_prefix("app") is None here: browser_url() gives http://127.0.0.1:<port>/']
    return [f'autodetect_prefix("app") = {prefix!r}']


class _Probe(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(PROBE)))
        self.end_headers()
        self.wfile.write(PROBE)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def _probe_server() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Probe)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _round_trip(info: Mapping[str, Any], port: int, timeout: float) -> str:
    base = str(info.get("url", "")).rstrip("/") + "/"
    url = f"{base}loopback/app/{port}/doctor"
    request = urllib.request.Request(url)
    if info.get("token"):
        request.add_header("Authorization", f"token {info['token']}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    started = time.perf_counter()
    try:
        with opener.open(request, timeout=timeout) as response:
            body = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        return f"{url}: HTTP {exc.code} ({exc.read(200).decode('utf-8', 'replace').strip() or exc.reason})"
    except (urllib.error.URLError, OSError) as exc:
        return f"{url}: unreachable ({exc})"
    took = (time.perf_counter() - started) * 1000
    if status == 200 and body == PROBE:
        return f"{url}: OK, round trip in {took:.0f} ms"
    return f"{url}: HTTP {status}, unexpected body {body[:60]!r}"


def _servers(timeout: float) -> list[str]:
    from jupyter_server.serverapp import list_running_servers

    servers = list(list_running_servers())
    if not servers:
        return ["no running jupyter-server found (nothing to test the route through)"]
    lines = []
    with _probe_server() as port:
        for info in servers:
            lines.append(f"pid {info.get('pid')} at {info.get('url')}")
            lines.append("  " + _round_trip(info, port, timeout))
    return lines


def doctor(*, timeout: float = 20) -> int:
    """Print the diagnosis; always returns 0."""
    print(f"jupyter-loopback {__version__} (Python {sys.version.split()[0]}, {sys.executable})")
    _section("environment", lambda: [environment_kind()])
    _section("namespaces", _namespaces)
    _section("jupyter-server extension", _extension)
    _section("kernel websocket TCP_NODELAY (widget round trips)", _nodelay)
    _section("kernel URL", _kernel_url)
    _section("running servers", lambda: _servers(timeout))
    return 0
