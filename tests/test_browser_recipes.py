"""The recipes in docs/recipes/ run as notebooks in JupyterLab, in Chromium.

Each page's code blocks become a notebook's cells, exactly as written; the
test runs them all and checks inside the output iframe that the app was
served through ``<base_url>loopback/app/<port>/``, rendered, and talked back
to the kernel (over its WebSocket, or a Dash callback's POST).
"""

from __future__ import annotations

import json
import os
import re
import socket
from typing import Any

import pytest

from loopback_asgi import Namespace

from .browser_fixtures import Lab, Opened, write_notebook
from .conftest import ROOT

RECIPES = ROOT / "docs" / "recipes"


def recipe_cells(name: str) -> list[tuple[str, str]]:
    """The page as notebook cells: prose as markdown, each ```python block as code.

    A block that starts with a ``# path.py`` line is a library's file (laid
    out by the fixture), shown as markdown.
    """
    cells: list[tuple[str, str]] = []
    parts = re.split(r"^```python\n(.*?)^```\n", (RECIPES / f"{name}.md").read_text(), flags=re.S | re.M)
    for i, part in enumerate(parts):
        if not part.strip():
            continue
        if i % 2 and not re.match(r"# \S+\.py\n", part):
            cells.append(("code", part.strip()))
        else:
            cells.append(("markdown", f"```python\n{part}```" if i % 2 else part.strip()))
    assert any(kind == "code" for kind, _ in cells), f"{name}.md has no python block"
    return cells


def run_recipe(lab: Lab, notebook: Any, name: str, namespace: str = "app") -> tuple[Opened, str]:
    """Run the recipe's notebook; return it and its app's port, checked to come through the proxy."""
    write_notebook(lab, f"recipes/{name}.ipynb", recipe_cells(name))
    opened: Opened = notebook(f"recipes/{name}.ipynb")
    frame = opened.frame()
    frame.wait_for_load_state()
    match = re.match(rf"^http://127\.0\.0\.1:\d+/loopback/{namespace}/(\d+)/", frame.url)
    assert match, f"the iframe is not served through the Jupyter route: {frame.url}"
    return opened, match[1]


def assert_websocket(opened: Opened, port: str) -> None:
    through = [url for url in opened.websockets if f"/loopback/app/{port}/" in url]
    assert through, f"no WebSocket through the proxy to port {port}: {opened.websockets}"


@pytest.mark.browser
@pytest.mark.proves("jupyterlab", "route")
def test_bokeh(lab: Lab, notebook: Any) -> None:
    opened, port = run_recipe(lab, notebook, "bokeh")
    frame = opened.frame()
    frame.locator("canvas").first.wait_for(state="visible")
    frame.get_by_role("button", name="Shift phase").click()
    # The title is drawn on the canvas: read it from the synced document model.
    frame.wait_for_function(
        "() => [...Bokeh.documents[0].all_models].some((m) => m.text === 'sin(x + 1)')", timeout=20_000
    )
    assert_websocket(opened, port)
    opened.screenshot("recipe-bokeh")


@pytest.mark.browser
@pytest.mark.proves("jupyterlab", "route")
def test_dash(lab: Lab, notebook: Any) -> None:
    opened, port = run_recipe(lab, notebook, "dash")
    frame = opened.frame()
    with opened.page.expect_response(re.compile(r"/_dash-update-component(\?|$)")) as callback:
        frame.locator("#count").click()
    assert callback.value.status == 200, callback.value.text()
    assert f"/loopback/app/{port}/" in callback.value.url
    frame.get_by_text("Clicked 1 time.").wait_for()
    frame.locator("#count").click()
    frame.get_by_text("Clicked 2 times.").wait_for()
    opened.screenshot("recipe-dash")


@pytest.mark.browser
@pytest.mark.proves("jupyterlab", "route")
def test_panel(lab: Lab, notebook: Any) -> None:
    opened, port = run_recipe(lab, notebook, "panel")
    frame = opened.frame()
    frame.get_by_role("button", name="Square it").click(timeout=30_000)
    frame.get_by_text("3 squared is").wait_for()
    assert_websocket(opened, port)
    opened.screenshot("recipe-panel")


@pytest.mark.browser
@pytest.mark.proves("jupyterlab", "route")
def test_fastapi(lab: Lab, notebook: Any) -> None:
    opened, port = run_recipe(lab, notebook, "fastapi")
    frame = opened.frame()
    frame.get_by_text("JSON: hello from the kernel").wait_for()
    frame.get_by_text("WebSocket echo: ping").wait_for()
    # root_path: the links FastAPI makes itself point inside the prefix.
    docs = frame.evaluate("async () => (await fetch('docs')).text()")
    assert f"'/loopback/app/{port}/openapi.json'" in docs
    assert_websocket(opened, port)
    opened.screenshot("recipe-fastapi")


@pytest.mark.browser
@pytest.mark.proves("jupyterlab", "route")
def test_library_author(lab: Lab, notebook: Any) -> None:
    opened, port = run_recipe(lab, notebook, "library-authors", namespace="mylib")
    frame = opened.frame()
    frame.get_by_text("mylib is reachable").wait_for()
    opened.screenshot("recipe-library-author")


def test_localtileserver_page(monkeypatch: pytest.MonkeyPatch) -> None:
    """The adoption page's code: its namespace loads, and its prefix follows the documented order."""
    text = (RECIPES / "localtileserver.md").read_text()
    blocks = re.findall(r"^```python\n(.*?)^```\n", text, flags=re.S | re.M)
    declared: dict[str, Any] = {}
    exec(blocks[0], declared)  # the ``_loopback.py`` module
    assert 8000 in Namespace.from_value("localtileserver", declared["NAMESPACE"]).ports
    page: dict[str, Any] = {}
    exec(blocks[1], page)
    client_prefix = page["client_prefix"]
    for name in ("LOCALTILESERVER_CLIENT_PREFIX", "JUPYTER_LOOPBACK_ROUTE", "JUPYTER_LOOPBACK_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    assert client_prefix(8000) is None
    route = {"prefix": "/user/alice/loopback", "namespaces": ["localtileserver"], "pid": os.getpid()}
    monkeypatch.setenv("JUPYTER_LOOPBACK_ROUTE", json.dumps({**route, "host": socket.gethostname()}))
    monkeypatch.setenv("JPY_PARENT_PID", str(os.getpid()))
    assert client_prefix(8000) == "/user/alice/loopback/localtileserver/8000"
    monkeypatch.setenv("LOCALTILESERVER_CLIENT_PREFIX", "proxy/{port}")
    assert client_prefix(8000) == "proxy/8000"
