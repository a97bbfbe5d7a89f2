"""marimo's own cases in headless Chromium: the comm bridge under ``marimo edit``.

``marimo edit`` runs one kernel process; re-running the bridge's cell makes
a new bridge. The cases marimo shares with Solara and Shiny (``marimo run``,
two tabs, the mount) are in test_apps.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.framework_fixtures import (
    MARIMO_APP,
    MARIMO_CLI,
    Server,
    bridge_cases,
    marimo_config,
    open_page,
    start_framework,
)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def marimo_edit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = marimo_config(tmp_path_factory.mktemp("marimo-config"))
    with start_framework(["marimo", "edit", MARIMO_APP, *MARIMO_CLI], r"URL: http", env=env) as server:
        yield server


@pytest.mark.proves("marimo", "bridge")
def test_bridge_edit(browser: Any, marimo_edit: Server) -> None:
    info = bridge_cases(browser, marimo_edit.url, "marimo-edit-bridge")
    assert info["how"] == "bridge"


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
