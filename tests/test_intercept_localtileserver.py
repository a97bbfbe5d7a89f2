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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .browser_fixtures import ARTIFACTS, RUN_ALL, RUN_TIMEOUT_MS
from .compat_fixtures import compat_python, start_compat_server  # noqa: F401
from .jupyter_fixtures import JupyterServer, stop_jupyter

# As in VS Code: no server route at all, neither this project's nor localtileserver's.
NO_ROUTE = [
    "--ServerApp.jpserver_extensions=loopback_asgi=False",
    "--ServerApp.jpserver_extensions=localtileserver._jupyter=False",
]

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


def _config(home: Path) -> dict[str, str]:
    """No "build recommended" dialog or news prompt over the notebook."""
    config = home / "config"
    config.mkdir(parents=True)
    page = {"page_config_data": {"buildCheck": False, "buildAvailable": False}}
    (config / "jupyter_server_config.json").write_text(json.dumps({"ServerApp": {"tornado_settings": page}}))
    notification = home / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True)
    notification.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    return {"JUPYTER_CONFIG_DIR": str(config)}


@pytest.fixture(params=["route", "no-route"])
def lts_lab(request: pytest.FixtureRequest, compat_python: str, tmp_path: Path) -> Iterator[tuple[str, JupyterServer]]:  # noqa: F811
    args = [
        "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}", f"--LabApp.user_settings_dir={tmp_path / 'settings'}",
        *(NO_ROUTE if request.param == "no-route" else []),
    ]  # fmt: skip
    server = start_compat_server("/", *args, app="jupyterlab", env=_config(tmp_path))
    root = Path(server.env["JUPYTER_RUNTIME_DIR"]).parent  # the server's root_dir
    (root / "map.ipynb").write_text(json.dumps(_notebook(MAP_CELL)))
    yield request.param, server
    stop_jupyter(server)


def _notebook(source: str) -> dict[str, Any]:
    cell = {"cell_type": "code", "metadata": {}, "source": source, "outputs": [], "execution_count": None}
    kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return {"cells": [cell], "metadata": {"kernelspec": kernelspec}, "nbformat": 4, "nbformat_minor": 5}


def test_leaflet_tiles_render(lts_lab: tuple[str, JupyterServer], browser: Any) -> None:
    mode, server = lts_lab
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(60_000)
    requests: list[str] = []
    refused: list[str] = []
    lab_origin = f"http://127.0.0.1:{server.port}/"

    def gate(route: Any) -> None:
        # The page reaches JupyterLab only: not the tile server's port, not the internet (the basemap).
        url = route.request.url
        requests.append(url)
        if url.startswith(lab_origin) or url.startswith("data:") or url.startswith("blob:"):
            route.continue_()
        else:
            refused.append(url)
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
        client = json.loads(printed.strip().splitlines()[-1])
        page.wait_for_function(f"() => ({TILES})().some((tile) => tile.width > 0)", timeout=90_000)
        tiles = page.evaluate(TILES)
        ARTIFACTS.mkdir(exist_ok=True)
        page.locator(".leaflet-container").first.scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / f"localtileserver-leaflet-{mode}.png"))
    finally:
        context.close()
    port = client["port"]
    loaded = [t for t in tiles if t["width"] > 0]
    assert len(loaded) >= 1 and all(t["width"] == 256 for t in loaded), tiles
    tile_server = re.compile(rf"^http://(?:127\.0\.0\.1|localhost):{port}/")
    if mode == "route":
        assert client["prefix"] == f"/localtileserver-proxy/{port}"
        assert all(t["src"].startswith(f"{lab_origin}localtileserver-proxy/{port}/api/tiles/") for t in loaded), loaded
        assert any(f"/localtileserver-proxy/{port}/api/tiles/" in url for url in requests)
    else:
        assert client["prefix"] is None and tile_server.match(client["url"]), client
        assert all(t["src"].startswith("blob:") for t in loaded), loaded
        assert not any("/localtileserver-proxy/" in url for url in requests)
    assert not any(tile_server.match(url) for url in refused), "the page asked the tile server directly"
