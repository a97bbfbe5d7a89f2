"""A real JupyterLab and Debian's Chromium, for the browser tests.

:func:`start_lab` is the one way the tests and benchmarks start JupyterLab
(any venv, server extensions on or off, a base URL, extra environment).
One JupyterLab server and one browser per session; each test gets a fresh
browser context, writes its notebook into the server's root, opens it, runs
every cell through JupyterLab's own command and looks inside the output
iframes. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import nbformat
import pytest

from .conftest import ROOT, Proc, free_port, start
from .security_fixtures import wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = ROOT / "test-artifacts"
LAB_TOKEN = "browser-test-token-5f1c"
# A kernel the Jupyter route is hidden from: the comm bridge path.
NO_ROUTE_KERNEL = "python3-noroute"
RUN_TIMEOUT_MS = 120_000
ANSI = re.compile(r"\x1b\[[0-9;]*m")
LIBRARY_PAGE = ROOT / "docs" / "recipes" / "library-authors.md"
FILE_BLOCK = re.compile(r"^```python\n# (\S+\.py)\n(.*?)^```\n", re.S | re.M)


@dataclass
class Lab:
    """A running JupyterLab (:func:`start_lab`): ``url`` ends with ``/``; notebooks go under ``root``."""

    url: str
    root: Path
    proc: Proc
    token: str = LAB_TOKEN

    @property
    def port(self) -> int:
        return int(urlsplit(self.url).port or 0)

    def api(self, method: str, path: str) -> Any:
        headers = {"Authorization": f"token {self.token}"}
        response = httpx.request(method, self.url + path, headers=headers, timeout=10, trust_env=False)
        response.raise_for_status()
        return response.json() if response.content else None

    def notebook(self, name: str, source: str) -> str:
        """Write a one-cell notebook ``name`` under ``root``; its URL, with the token."""
        write_notebook(self, name, [("code", source)])
        return f"{self.url}lab/tree/{name}?token={self.token}"

    def shutdown_kernels(self) -> None:
        for session in self.api("GET", "api/sessions"):
            self.api("DELETE", f"api/sessions/{session['id']}")


@dataclass
class Opened:
    """A notebook opened and run in the browser, with what the page's WebSockets did."""

    page: Any
    websockets: list[str] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)

    def frame(self, index: int = 0) -> Any:
        """The ``index``-th output iframe's content frame."""
        return self._content(self.page.locator(".jp-OutputArea-output iframe").nth(index))

    def frame_of(self, selector: str) -> Any:
        """The content frame of the one output iframe matching ``selector``."""
        return self._content(self.page.locator(f".jp-OutputArea-output {selector}"))

    def _content(self, locator: Any) -> Any:
        locator.scroll_into_view_if_needed()
        # Wait until the iframe has navigated away from its initial about:blank.
        handle = locator.element_handle()
        self.page.wait_for_function(
            "(el) => el.contentDocument === null || (el.contentWindow.location.href !== 'about:blank'"
            " && el.contentDocument.readyState === 'complete')",
            arg=handle,
        )
        frame = handle.content_frame()
        assert frame is not None
        return frame

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path))
        return path


def _write_config(home: Path, python: str) -> dict[str, str]:
    """Isolated Jupyter dirs: a kernel with no route, and no dialogs over the notebook."""
    spec = home / "data" / "kernels" / NO_ROUTE_KERNEL
    spec.mkdir(parents=True)
    kernel = {
        "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (no Jupyter route)",
        "language": "python",
        "env": {"JUPYTER_LOOPBACK_DISABLE": "1"},
    }
    (spec / "kernel.json").write_text(json.dumps(kernel))
    config = home / "config"
    config.mkdir()
    # Installed lab extensions (Dash's) would otherwise pop a "Build Recommended" dialog.
    page = {"page_config_data": {"buildCheck": False, "buildAvailable": False}}
    (config / "jupyter_server_config.json").write_text(json.dumps({"ServerApp": {"tornado_settings": page}}))
    notification = home / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True)
    notification.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    return {
        "JUPYTER_PATH": str(home / "data"),
        "JUPYTER_CONFIG_DIR": str(config),
        "JUPYTER_RUNTIME_DIR": str(home),
        "JUPYTER_LOOPBACK_ROUTE": "",  # none inherited from the shell that runs the tests
    }


def start_lab(
    home: Path,
    *args: str,
    python: str = sys.executable,
    base_url: str = "/",
    extensions: Mapping[str, bool] | None = None,
    env: Mapping[str, str] | None = None,
    token: str = LAB_TOKEN,
) -> Lab:
    """``python -m jupyterlab`` on a free 127.0.0.1 port, its dirs under ``home``, ready when ``/api/status`` answers.

    ``python`` picks the venv (its server extensions and kernels);
    ``extensions`` turns server extensions on or off by module name
    (``{"loopback_asgi": False}``); ``env`` adds to the isolated Jupyter
    dirs' variables (``PYTHONPATH`` is this checkout unless given). The
    caller stops ``lab.proc``; a server that never answers is stopped here.
    """
    root = home / "root"
    root.mkdir(parents=True)
    switches = [f"--ServerApp.jpserver_extensions={name}={on}" for name, on in (extensions or {}).items()]
    cmd = [
        python, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={free_port()}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
        f"--ServerApp.base_url={base_url}", f"--ServerApp.root_dir={root}",
        "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        f"--LabApp.workspaces_dir={home / 'workspaces'}", f"--LabApp.user_settings_dir={home / 'settings'}",
        *switches, *args,
    ]  # fmt: skip
    full_env = {**_write_config(home, python), **(env or {})}
    proc = start(cmd, rf"(http://127\.0\.0\.1:\d+{re.escape(base_url)})lab", env=full_env, timeout=90)
    lab = Lab(proc.match[1], root, proc, token)

    def answers() -> bool:
        try:
            lab.api("GET", "api/status")
        except httpx.HTTPError:
            return False
        return True

    # The REST API answers soon after the URL is printed.
    if not wait_until(answers, 30, interval=0.2):
        proc.stop()
        raise RuntimeError("JupyterLab did not answer /api/status:\n" + "".join(proc.output))
    return lab


def install_doc_library(site: Path) -> None:
    """Lay out the library of docs/recipes/library-authors.md as an installed distribution.

    Its ``# path.py`` blocks become files and its entry-point table an
    ``entry_points.txt``, so the server discovers the namespace exactly as the
    page declares it.
    """
    text = LIBRARY_PAGE.read_text()
    for path, source in FILE_BLOCK.findall(text):
        (site / path).parent.mkdir(parents=True, exist_ok=True)
        (site / path).write_text(source)
    table = re.search(r'^```toml\n\[project\.entry-points\."(.+?)"\]\n(.*?)^```', text, re.S | re.M)
    assert table, f"no entry-point table in {LIBRARY_PAGE.name}"
    info = site / "mylib-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mylib\nVersion: 0.1\n")
    entries = table[2].replace('"', "")
    (info / "entry_points.txt").write_text(f"[{table[1]}]\n{entries}")


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """JupyterLab (:func:`start_lab`) with the library of docs/recipes/library-authors.md installed."""
    home = tmp_path_factory.mktemp("lab")
    site = home / "site"
    site.mkdir()
    install_doc_library(site)
    server = start_lab(home, env={"PYTHONPATH": f"{ROOT}{os.pathsep}{site}"})
    yield server
    server.proc.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    # Module scope: Playwright's sync API keeps an asyncio loop running in the
    # main thread while it is open, which would break the async tests of the
    # modules collected after this one.
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (make system-deps).")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def notebook(lab: Lab, browser: Any) -> Iterator[Any]:
    """``open(relpath, block=None) -> Opened``: open a notebook under ``lab.root`` and run all its cells.

    ``block(url)`` returning true makes the browser fail that request.
    """
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(30_000)

    def open_(relpath: str, *, block: Callable[[str], bool] | None = None) -> Opened:
        page = context.new_page()
        opened = Opened(page)
        page.on("websocket", lambda ws: opened.websockets.append(ws.url))
        page.on("requestfailed", lambda r: opened.log.append(f"failed {r.method} {r.url}"))
        page.on("response", lambda r: r.status >= 400 and opened.log.append(f"{r.status} {r.request.method} {r.url}"))
        page.on("console", lambda m: m.type == "error" and opened.log.append(f"console: {m.text}"))
        if block is not None:

            def gate(route: Any) -> None:
                if block(route.request.url):
                    opened.blocked.append(route.request.url)
                    route.abort()
                else:
                    route.continue_()

            page.route("**/*", gate)
        workspace = re.sub(r"[^a-z0-9]+", "-", relpath.lower())
        page.goto(f"{lab.url}lab/workspaces/{workspace}/tree/{relpath}?reset&token={LAB_TOKEN}")
        page.wait_for_function(
            "(p) => window.jupyterapp?.shell.currentWidget?.context?.path === p", arg=relpath, timeout=60_000
        )
        errors = page.evaluate(RUN_ALL, RUN_TIMEOUT_MS)
        if errors:
            pytest.fail("notebook cell failed:\n" + ANSI.sub("", "\n".join(errors)))
        return opened

    yield open_
    context.close()
    lab.shutdown_kernels()


# Run every cell with JupyterLab's own command and report the cells' errors.
RUN_ALL = """async (timeoutMs) => {
  const app = window.jupyterapp;
  const panel = app.shell.currentWidget;
  await panel.context.ready;
  await panel.sessionContext.ready;
  app.shell.collapseLeft();
  const done = app.commands.execute("notebook:run-all-cells");
  const late = new Promise((_, reject) => setTimeout(() => reject(new Error("cells still running")), timeoutMs));
  await Promise.race([done, late]);
  const errors = [];
  for (const cell of panel.content.model.cells) {
    if (cell.type !== "code") continue;
    for (const out of cell.outputs.toJSON()) {
      if (out.output_type === "error") errors.push(out.traceback.join("\\n"));
    }
    if (cell.executionCount === null) errors.push("not run: " + cell.sharedModel.getSource().slice(0, 80));
  }
  return errors;
}"""


def write_notebook(lab: Lab, relpath: str, cells: list[tuple[str, str]], kernel: str = "python3") -> Path:
    """Write ``cells`` (``("code"|"markdown", source)``) as a notebook under ``lab.root``."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": kernel, "display_name": kernel, "language": "python"}
    new = {"code": nbformat.v4.new_code_cell, "markdown": nbformat.v4.new_markdown_cell}
    nb.cells = [new[kind](source) for kind, source in cells]
    path = lab.root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path
