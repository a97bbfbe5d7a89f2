"""marimo, Solara and Shiny in headless Chromium: the comm bridge per session, and the mounted sidecar.

Each app starts an upstream in the framework's process and shows each
session's bridge: marimo (``marimo run``, a kernel thread per tab in one
process, so two tabs prove the bridges apart), Solara (``solara run``, one
virtual kernel per page; the app mounts ``create_app()`` into
``solara.server.starlette.app``) and Shiny with shinywidgets (``shiny run``,
``render_widget``; the app mounts the sidecar with ``mount_into(app)``).
The servers and how each is reached are tests/framework_fixtures.py's
``APPS``; the marimo-only cases (``marimo edit``) are in test_marimo.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.framework_fixtures import (
    Framework,
    bridge_cases,
    route_cases,
    session_end_closes_the_bridge,
    two_tabs,
    worker_thread_replies,
)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]


@pytest.mark.proves("marimo", "bridge")
@pytest.mark.proves("shiny", "bridge")
@pytest.mark.proves("solara", "bridge")
def test_bridge(browser: Any, framework: Framework) -> None:
    info = bridge_cases(browser, framework.page.url, f"{framework.name}-bridge")
    assert info["how"] == framework.how
    if framework.how == "bridge":  # no mount in this process: reach() hands out the direct address
        assert info["url"] == f"http://127.0.0.1:{info['port']}/"


@pytest.mark.proves("marimo", "bridge")
@pytest.mark.proves("shiny", "bridge")
@pytest.mark.proves("solara", "bridge")
def test_two_tabs_isolated(browser: Any, framework: Framework) -> None:
    two_tabs(browser, framework.page.url)


@pytest.mark.proves("marimo", "bridge")
@pytest.mark.proves("shiny", "bridge")
@pytest.mark.proves("solara", "bridge")
def test_reply_from_worker_thread(browser: Any, framework: Framework) -> None:
    worker_thread_replies(browser, framework.page.url)


@pytest.mark.proves("marimo", "mount")
@pytest.mark.proves("shiny", "mount")
@pytest.mark.proves("solara", "mount")
def test_mounted_route(browser: Any, framework: Framework) -> None:
    route_cases(browser, framework.route.url)


@pytest.mark.proves("shiny", "bridge")
@pytest.mark.proves("solara", "bridge")
@pytest.mark.parametrize("framework", ["shiny", "solara"], indirect=True)
def test_session_end_closes_the_bridge(browser: Any, framework: Framework) -> None:
    session_end_closes_the_bridge(browser, framework.page.url)
