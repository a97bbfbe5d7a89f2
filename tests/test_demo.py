"""examples/demo.ipynb end to end in JupyterLab and Chromium, both paths.

Through the Jupyter server: the demo page comes from
``<base_url>loopback/app/<port>/``. Through the comm bridge: the kernel has
no route (``JUPYTER_LOOPBACK_DISABLE=1``) and the browser is kept off both
the proxy route and the kernel's ports, so every byte crosses the comm.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
from typing import Any
from urllib.parse import urlsplit

import pytest

from .browser_fixtures import NO_ROUTE_KERNEL, Lab, Opened
from .conftest import ROOT

pytestmark = pytest.mark.browser

EXAMPLES = ROOT / "examples"


def demo_png() -> bytes:
    spec = importlib.util.spec_from_file_location("demo_server", EXAMPLES / "demo_server.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return bytes(module.IMAGE)


def copy_demo(lab: Lab, folder: str, kernel: str = "python3") -> str:
    target = lab.root / folder
    target.mkdir()
    for name in ("demo_server.py", "demo_page.html"):
        shutil.copy(EXAMPLES / name, target / name)
    notebook = (EXAMPLES / "demo.ipynb").read_text()
    if kernel != "python3":
        notebook = notebook.replace('"name": "python3"', f'"name": "{kernel}"')
    (target / "demo.ipynb").write_text(notebook)
    return f"{folder}/demo.ipynb"


def check_demo(opened: Opened, frame: Any, fetch_image: str) -> None:
    """Everything the demo page shows, plus the image's bytes compared with the server's."""
    frame.locator("#json.ok").wait_for()
    assert '"message": "Hello from the kernel"' in frame.locator("#json").inner_text()
    frame.locator("#imgcheck.ok").wait_for()
    assert "CRC-32 matches, 192×96 px" in frame.locator("#imgcheck").inner_text()
    assert frame.evaluate("() => document.getElementById('img').naturalWidth") == 192
    assert bytes(frame.evaluate(fetch_image)) == demo_png()

    frame.locator("#echo.ok").wait_for()
    frame.locator("#echoin").fill("round trip ✓ 42")
    frame.get_by_role("button", name="Send").click()
    frame.get_by_text("echo: round trip ✓ 42").wait_for()

    frame.locator("#sse.ok").wait_for()
    first = int(frame.locator("#count").inner_text())
    frame.wait_for_function(f"() => Number(document.getElementById('count').textContent) >= {first + 2}")


def test_demo_through_jupyter(lab: Lab, notebook: Any) -> None:
    opened: Opened = notebook(copy_demo(lab, "demo-proxy"))
    frame = opened.frame_of("iframe[src]")
    match = re.match(r"^http://127\.0\.0\.1:\d+/loopback/app/(\d+)/$", frame.url)
    assert match, frame.url
    check_demo(opened, frame, "async () => Array.from(new Uint8Array(await (await fetch('image.png')).arrayBuffer()))")
    assert any(f"/loopback/app/{match[1]}/ws" in url for url in opened.websockets), opened.websockets
    assert "Through the Jupyter server at /loopback/app/" in frame.locator("#via").inner_text()
    opened.screenshot("demo-through-jupyter")


def test_demo_through_comm_bridge(lab: Lab, notebook: Any) -> None:
    jupyter = urlsplit(lab.url).netloc

    def off_route(url: str) -> bool:
        # The proxy route and anything that is not the Jupyter server (the
        # kernel's own port) are unreachable: only the comm can carry the demo.
        parts = urlsplit(url)
        return parts.scheme in ("http", "https") and (parts.netloc != jupyter or "/loopback/" in parts.path)

    opened: Opened = notebook(copy_demo(lab, "demo-bridge", NO_ROUTE_KERNEL), block=off_route)
    assert opened.page.locator(".jp-OutputArea-output iframe[src]").count() == 0
    opened.page.get_by_text("No Jupyter server route reaches this kernel's servers here").wait_for()
    frame = opened.frame_of("iframe[srcdoc]")
    port = frame.evaluate("() => Number(document.documentElement.dataset.port)")
    check_demo(
        opened,
        frame,
        "async () => Array.from(new Uint8Array(await (await parent.__jupyter_loopback__"
        f".fetch({port}, '/image.png')).arrayBuffer()))",
    )
    assert frame.locator("#via").inner_text() == f"Through the comm bridge to port {port}"
    assert not [url for url in opened.websockets if "/loopback/" in url or f":{port}/" in url], opened.websockets
    assert not [url for url in opened.blocked if "/loopback/" in url or f":{port}/" in url], opened.blocked
    opened.screenshot("demo-through-comm-bridge")
