"""localtileserver 1.0.0 and ipyleaflet, unchanged from PyPI, in JupyterLab and Chromium.

JupyterLab runs from ``.venv-compat`` (tests/compat_fixtures.py). A notebook
writes a small GeoTIFF, opens a ``TileClient`` on it and puts
``get_leaflet_tile_layer`` on an ipyleaflet ``Map``. Leaflet then loads the
tiles as it always does, by setting ``img.src``:

- with both server extensions on, the tile URLs are the
  ``localtileserver-proxy`` route's and the page loads them over HTTP;
- with neither (this project's and localtileserver's disabled, as in VS
  Code, where no server route exists), the tile URLs are
  ``http://127.0.0.1:<port>/…``, which the browser is not allowed to reach
  here: the bridge's interception carries them over the comm.

A screenshot of each map goes to ``test-artifacts/``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.browser_fixtures import ARTIFACTS, RUN_ALL, RUN_TIMEOUT_MS, Lab, start_lab
from tests.compat_fixtures import compat_python  # noqa: F401

# As in VS Code: no server route at all, neither this project's nor localtileserver's.
NO_ROUTE = {"loopback_asgi": False, "localtileserver._jupyter": False}

MAP_CELL = """
import json, os, tempfile
import numpy as np
import rasterio
from rasterio.transform import from_bounds
from ipyleaflet import Map
from localtileserver import TileClient, get_leaflet_tile_layer

path = os.path.join(tempfile.mkdtemp(), "small.tif")
bands = (np.indices((3, 64, 64)).sum(axis=0) * 4 % 256).astype("uint8")
with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=3, dtype="uint8", crs="EPSG:4326",
                   transform=from_bounds(10.0, 45.0, 11.0, 46.0, 64, 64)) as out:
    out.write(bands)
client = TileClient(path)
layer = get_leaflet_tile_layer(client)
print(json.dumps({"port": client.server_port, "prefix": client.client_prefix, "url": layer.url}))
m = Map(center=(45.5, 10.5), zoom=8)
m.add(layer)
m
"""

# The map's tiles from the tile server: loaded, with their sizes.
TILES = """() => [...document.querySelectorAll(".leaflet-tile-container img")]
  .filter((img) => img.src.startsWith("blob:") || img.src.includes("/localtileserver-proxy/"))
  .map((img) => ({src: img.src, width: img.naturalWidth, complete: img.complete}))"""


@dataclass
class Rendered:
    """What the page showed: the tile client's port, prefix and URL, its tiles, what it requested."""

    client: dict[str, Any]
    tiles: list[dict[str, Any]]
    requests: list[str]
    refused: list[str]
    origin: str

    @property
    def loaded(self) -> list[dict[str, Any]]:
        return [t for t in self.tiles if t["width"] > 0]

    def asked_tile_server(self) -> bool:
        port = self.client["port"]
        return any(re.match(rf"^http://(?:127\.0\.0\.1|localhost):{port}/", url) for url in self.refused)


def _lab(tmp_path: Path, python: str, extensions: dict[str, bool] | None = None) -> Lab:
    """JupyterLab from ``.venv-compat``, with the map notebook in its root."""
    lab = start_lab(tmp_path, python=python, extensions=extensions)
    lab.notebook("map.ipynb", MAP_CELL)
    return lab


def _render(server: Lab, browser: Any, screenshot: str) -> Rendered:
    """Open and run the notebook; wait (bounded) for a tile; screenshot the page."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(60_000)
    origin = f"http://127.0.0.1:{server.port}/"
    seen = Rendered({}, [], [], [], origin)

    def gate(route: Any) -> None:
        # The page reaches JupyterLab only: not the tile server's port, not the internet (the basemap).
        url = route.request.url
        seen.requests.append(url)
        if url.startswith((origin, "data:", "blob:")):
            route.continue_()
        else:
            seen.refused.append(url)
            route.abort()

    context.route("**/*", gate)
    try:
        page = context.new_page()
        page.goto(f"{server.url}lab/tree/map.ipynb?reset&token={server.token}")
        page.wait_for_function("() => window.jupyterapp?.shell.currentWidget?.context?.path === 'map.ipynb'")
        errors = page.evaluate(RUN_ALL, RUN_TIMEOUT_MS)
        assert not errors, errors
        printed = page.evaluate(
            """() => window.jupyterapp.shell.currentWidget.content.model.cells.get(0).outputs.toJSON()
                 .filter((o) => o.output_type === "stream").map((o) => o.text).join("")"""
        )
        seen.client = json.loads(printed.strip().splitlines()[-1])
        page.wait_for_function(f"() => ({TILES})().some((tile) => tile.width > 0)", timeout=90_000)
        seen.tiles = page.evaluate(TILES)
        ARTIFACTS.mkdir(exist_ok=True)
        page.locator(".leaflet-container").first.scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / f"{screenshot}.png"))
    finally:
        context.close()
    return seen


@pytest.mark.proves("jupyterlab", "alias")
def test_tiles_render_through_the_route(compat_python: str, tmp_path: Path, browser: Any) -> None:  # noqa: F811
    server = _lab(tmp_path, compat_python)
    try:
        seen = _render(server, browser, "localtileserver-leaflet-route")
    finally:
        server.proc.stop()
    port = seen.client["port"]
    assert seen.client["prefix"] == f"/localtileserver-proxy/{port}"
    assert len(seen.loaded) >= 1 and all(t["width"] == 256 for t in seen.loaded), seen.tiles
    tiles = f"{seen.origin}localtileserver-proxy/{port}/api/tiles/"
    assert all(t["src"].startswith(tiles) for t in seen.loaded), seen.loaded
    assert any(url.startswith(tiles) for url in seen.requests)
    assert not seen.asked_tile_server()


@pytest.mark.proves("jupyterlab", "bridge")
def test_tiles_render_through_the_bridge_with_no_route(compat_python: str, tmp_path: Path, browser: Any) -> None:  # noqa: F811
    server = _lab(tmp_path, compat_python, NO_ROUTE)
    try:
        seen = _render(server, browser, "localtileserver-leaflet-no-route")
    finally:
        server.proc.stop()
    assert seen.client["prefix"] is None
    assert re.match(rf"^http://(?:127\.0\.0\.1|localhost):{seen.client['port']}/api/tiles/", seen.client["url"])
    assert len(seen.loaded) >= 1 and all(t["width"] == 256 for t in seen.loaded), seen.tiles
    assert all(t["src"].startswith("blob:") for t in seen.loaded), seen.loaded
    assert not any("/localtileserver-proxy/" in url for url in seen.requests)
    assert not seen.asked_tile_server(), "the page asked the tile server directly"
