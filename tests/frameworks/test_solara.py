"""Solara (``solara run``) in headless Chromium: the comm bridge per session, and the mounted sidecar.

tests/apps/solara_app.py starts an upstream in Solara's process, shows each
page's bridge (one virtual kernel per page) and mounts ``create_app()``
into ``solara.server.starlette.app``.
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
def solara() -> Iterator[Server]:
    args = ["solara", "run", "tests/apps/solara_app.py", "--host", "127.0.0.1", "--port", "{port}", "--production"]
    yield from start_framework(args, r"Solara server is starting at")


@pytest.mark.proves("solara", "bridge")
def test_bridge(browser: Any, solara: Server) -> None:
    info = bridge_cases(browser, solara.url, "solara-bridge")
    assert info["how"] == "mount"  # the app also mounts the sidecar, and reach() prefers it


@pytest.mark.proves("solara", "bridge")
def test_two_tabs_isolated(browser: Any, solara: Server) -> None:
    two_tabs(browser, solara.url)


@pytest.mark.proves("solara", "bridge")
def test_reply_from_worker_thread(browser: Any, solara: Server) -> None:
    worker_thread_replies(browser, solara.url)


@pytest.mark.proves("solara", "mount")
def test_mounted_route(browser: Any, solara: Server) -> None:
    route_cases(browser, solara.url)


@pytest.mark.proves("solara", "bridge")
def test_session_end_closes_the_bridge(browser: Any, solara: Server) -> None:
    session_end_closes_the_bridge(browser, solara.url)
