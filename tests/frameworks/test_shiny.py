"""Shiny with shinywidgets (``shiny run``) in headless Chromium: the comm bridge per session, and the mounted sidecar.

tests/apps/shiny_app.py starts an upstream in Shiny's process, shows each
session's bridge with ``render_widget`` and mounts ``create_app()`` with
``mount_into(app)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.framework_fixtures import (
    Server,
    bridge_cases,
    route_cases,
    session_end_closes_the_bridge,
    start_framework,
    two_tabs,
    worker_thread_replies,
)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def shiny() -> Iterator[Server]:
    args = ["shiny", "run", "tests/apps/shiny_app.py", "--host", "127.0.0.1", "--port", "{port}"]
    yield from start_framework(args, r"Uvicorn running on")


@pytest.mark.proves("shiny", "bridge")
def test_bridge(browser: Any, shiny: Server) -> None:
    info = bridge_cases(browser, shiny.url, "shiny-bridge")
    assert info["how"] == "mount"  # the app also mounts the sidecar, and reach() prefers it


@pytest.mark.proves("shiny", "bridge")
def test_two_tabs_isolated(browser: Any, shiny: Server) -> None:
    two_tabs(browser, shiny.url)


@pytest.mark.proves("shiny", "bridge")
def test_reply_from_worker_thread(browser: Any, shiny: Server) -> None:
    worker_thread_replies(browser, shiny.url)


@pytest.mark.proves("shiny", "mount")
def test_mounted_route(browser: Any, shiny: Server) -> None:
    route_cases(browser, shiny.url)


@pytest.mark.proves("shiny", "bridge")
def test_session_end_closes_the_bridge(browser: Any, shiny: Server) -> None:
    session_end_closes_the_bridge(browser, shiny.url)
