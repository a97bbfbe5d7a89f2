"""localtileserver 1.0.0, unchanged from PyPI, on this project: the 0.3.x API is all it needs.

``.venv-compat`` (tests/compat_fixtures.py) holds localtileserver 1.0.0, which
requires ``jupyter-loopback[comm]>=0.3.3`` and imports ``jupyter_loopback``,
installed beside this checkout. In a real ``jupyter server`` from that venv
(base ``/`` and ``/base/``), a kernel writes a small GeoTIFF, opens a
``TileClient`` on it, and the tile and thumbnail URLs it hands out return
PNGs through the server, to authenticated requests only.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.compat_fixtures import COMPAT_VENV, compat_python, start_compat_server  # noqa: F401
from tests.conftest import ROOT
from tests.jupyter_fixtures import JupyterServer, Kernel, stop_jupyter

PNG = b"\x89PNG\r\n\x1a\n"
# The raster's bounds (EPSG:4326) and a point inside them.
WEST, SOUTH, EAST, NORTH = 10.0, 45.0, 11.0, 46.0
LON, LAT, ZOOM = 10.5, 45.5, 8

OPEN_CLIENT = f"""
import json, os, sys, tempfile
import numpy as np
import rasterio
from rasterio.transform import from_bounds
import jupyter_loopback
import localtileserver
from localtileserver import TileClient

path = os.path.join(tempfile.mkdtemp(), "small.tif")
bands = (np.indices((3, 64, 64)).sum(axis=0) * 4 % 256).astype("uint8")
with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=3, dtype="uint8", crs="EPSG:4326",
                   transform=from_bounds({WEST}, {SOUTH}, {EAST}, {NORTH}, 64, 64)) as out:
    out.write(bands)
CLIENT = TileClient(path)
print(json.dumps({{
    "python": sys.executable,
    "jupyter_loopback": jupyter_loopback.__file__,
    "localtileserver": localtileserver.__version__,
    "port": CLIENT.server_port,
    "prefix": CLIENT.client_prefix,
    "tile": CLIENT.get_tile_url(client=True),
    "thumbnail": CLIENT.create_url("api/thumbnail.png", client=True),
}}))
"""


def _tile(lon: float, lat: float, zoom: int) -> tuple[int, int]:
    """The slippy-map tile holding (lon, lat)."""
    n = 2**zoom
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return x, y


@pytest.fixture(scope="module", params=["/", "/base/"])
def lts_server(request: pytest.FixtureRequest, compat_python: str) -> Iterator[JupyterServer]:  # noqa: F811
    server = start_compat_server(request.param)
    yield server
    stop_jupyter(server)


@pytest.fixture(scope="module")
def opened(lts_server: JupyterServer) -> Iterator[dict[str, str]]:
    """What the kernel's ``TileClient`` hands out; the kernel (and its tile server) lives for the module."""
    kernel = Kernel.start(lts_server)
    try:
        yield json.loads(asyncio.run(kernel.execute(OPEN_CLIENT, timeout=180)))
    finally:
        kernel.shutdown()


def test_extension_mounts_its_route(lts_server: JupyterServer) -> None:
    log = "".join(lts_server.proc.output)
    assert f"localtileserver: proxy registered at {lts_server.base_url}localtileserver-proxy/" in log
    with lts_server.client() as c:
        assert c.get(f"{lts_server.url}localtileserver-proxy/__probe__").status_code == 204


async def test_tile_and_thumbnail_urls_return_pngs(lts_server: JupyterServer, opened: dict[str, str]) -> None:
    base, port = lts_server.base_url, opened["port"]
    assert opened["python"].startswith(f"{COMPAT_VENV}/")
    assert opened["jupyter_loopback"].startswith(f"{ROOT}/jupyter_loopback/")
    assert opened["localtileserver"] == "1.0.0"
    assert opened["prefix"] == f"{base}localtileserver-proxy/{port}"
    x, y = _tile(LON, LAT, ZOOM)
    tile = opened["tile"].replace("{z}", str(ZOOM)).replace("{x}", str(x)).replace("{y}", str(y))
    thumbnail = opened["thumbnail"]
    origin = f"http://127.0.0.1:{lts_server.port}"
    with lts_server.client() as c:
        for url in (tile, thumbnail):
            assert url.startswith(f"{base}localtileserver-proxy/{port}/api/"), url
            r = c.get(origin + url, headers=lts_server.auth)
            assert r.status_code == 200, (url, r.status_code, r.text[:200])
            assert r.content.startswith(PNG) and r.headers["content-type"] == "image/png", url


async def test_route_refuses_anonymous_http_and_websocket(lts_server: JupyterServer, opened: dict[str, str]) -> None:
    url = f"{lts_server.url}localtileserver-proxy/{opened['port']}/api/thumbnail.png"
    with lts_server.client() as c:
        r = c.get(url)
        assert r.status_code in (302, 403) and not r.content.startswith(PNG)
        assert r.status_code == 403 or "login" in r.headers["location"]
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url.replace("http://", "ws://"), proxy=None, open_timeout=30):
            pass
    assert refused.value.response.status_code == 403
