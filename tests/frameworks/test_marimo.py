"""marimo in headless Chromium: the comm bridge under ``marimo run`` and ``marimo edit``, and the mounted sidecar.

tests/apps/marimo_app.py starts an upstream in the kernel's process and shows
the session's bridge. ``marimo run`` runs a kernel thread per tab in one
process, so two tabs prove the bridges apart; ``marimo edit`` runs one kernel
process. marimo's CLI servers offer no hook to add a route, so the mount is
proven with marimo's ASGI API (tests/apps/marimo_server.py) under uvicorn.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.framework_fixtures import (
    Server,
    bridge_cases,
    open_page,
    route_cases,
    start_framework,
    two_tabs,
    worker_thread_replies,
)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

APP = "tests/apps/marimo_app.py"
CLI = ["--headless", "--no-token", "--host", "127.0.0.1", "-p", "{port}"]


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """marimo's user configuration in a directory of its own: ``marimo edit`` runs the cells on open."""
    home = tmp_path_factory.mktemp("marimo-config")
    (home / "marimo").mkdir()
    (home / "marimo" / "marimo.toml").write_text("[runtime]\nauto_instantiate = true\n")
    return {"XDG_CONFIG_HOME": str(home)}


@pytest.fixture(scope="module")
def marimo_run(config: dict[str, str]) -> Iterator[Server]:
    yield from start_framework(["marimo", "run", APP, *CLI], r"URL: http", env=config)


@pytest.fixture(scope="module")
def marimo_edit(config: dict[str, str]) -> Iterator[Server]:
    yield from start_framework(["marimo", "edit", APP, *CLI], r"URL: http", env=config)


@pytest.fixture(scope="module")
def marimo_mounted() -> Iterator[Server]:
    args = ["uvicorn", "tests.apps.marimo_server:server", "--host", "127.0.0.1", "--port", "{port}"]
    yield from start_framework(args, r"Uvicorn running on")


@pytest.mark.proves("marimo", "bridge")
def test_bridge_run(browser: Any, marimo_run: Server) -> None:
    info = bridge_cases(browser, marimo_run.url, "marimo-run-bridge")
    assert info["how"] == "bridge" and info["url"] == f"http://127.0.0.1:{info['port']}/"


@pytest.mark.proves("marimo", "bridge")
def test_two_tabs_isolated(browser: Any, marimo_run: Server) -> None:
    two_tabs(browser, marimo_run.url)


@pytest.mark.proves("marimo", "bridge")
def test_reply_from_worker_thread(browser: Any, marimo_run: Server) -> None:
    worker_thread_replies(browser, marimo_run.url)


@pytest.mark.proves("marimo", "bridge")
def test_bridge_edit(browser: Any, marimo_edit: Server) -> None:
    info = bridge_cases(browser, marimo_edit.url, "marimo-edit-bridge")
    assert info["how"] == "bridge"


@pytest.mark.proves("marimo", "mount")
def test_mounted_route(browser: Any, marimo_mounted: Server) -> None:
    route_cases(browser, marimo_mounted.url)


@pytest.mark.proves("marimo", "bridge")
def test_rerun_cell_makes_a_new_bridge(browser: Any, marimo_edit: Server) -> None:
    """Re-running the cell closes the comm but leaves ``widget.comm`` set: the bridge must count as closed."""
    context, page, first = open_page(browser, marimo_edit.url)
    try:
        page.locator(".cm-content").first.click()  # the bridge's cell: run it again
        page.keyboard.press("Control+Enter")
        fresh = page.locator(".loopback-info", has_text='"port"').filter(has_not_text=first["bridge"])
        second = json.loads(fresh.first.text_content(timeout=60_000) or "{}")
        assert second["bridge"] != first["bridge"] and second["how"] == "bridge"
        script = "async () => await window.__jupyter_loopback__.request('demo', 'echo', {after: 'rerun'})"
        reply = page.evaluate(script)
        assert reply["status"] == "ok" and reply["data"]["echo"] == {"after": "rerun"}, reply
        models = page.evaluate("() => window.__jupyter_loopback__.registry.models.length")
        assert models == 1, "the closed bridge's model is still subscribed"
    finally:
        context.close()
