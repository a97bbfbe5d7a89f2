"""``TCP_NODELAY`` on the kernel websockets of a real jupyter server, and widgets with it on.

The socket option is read inside the server process (``tests/nodelay_probe.py``,
a test-only server extension reading ``getsockopt`` on its own descriptors)
for the kernel websocket this test holds open, and inside the kernel for the
ZMQ legs between the server and the kernel.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect

from loopback_asgi.jupyter.nodelay import NoDelay, with_nodelay
from tests.browser_fixtures import Lab, write_notebook
from tests.cli.test_doctor import _doctor
from tests.jupyter_fixtures import JupyterServer, Kernel, start_jupyter, stop_jupyter
from tests.nodelay_probe import V1, MarkedConnection, kernel_info

MARKED = "tests.nodelay_probe.MarkedConnection"
Servers = dict[str, tuple[JupyterServer, Kernel]]


def _server(tmp: Path, *args: str, env: dict[str, str] | None = None) -> JupyterServer:
    """A jupyter server with the probe extension (and jupyter-loopback, enabled by its install)."""
    config = tmp / "config"
    config.mkdir()
    extensions = {"ServerApp": {"jpserver_extensions": {"tests.nodelay_probe": True}}}
    (config / "jupyter_server_config.json").write_text(json.dumps(extensions))
    return start_jupyter("/nd/", *args, env={"JUPYTER_CONFIG_DIR": str(config), **(env or {})})


SETUPS = {
    "on": ((), {}),
    "off": (("--Loopback.kernel_websocket_nodelay=False",), {}),
    "admin class": ((f"--ServerApp.kernel_websocket_connection_class={MARKED}",), {}),
    "extension class": ((), {"NODELAY_PROBE_SET_CLASS": "1"}),
}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """One server and kernel per setup, started once for the module."""
    running: Servers = {}
    try:
        for name, (args, env) in SETUPS.items():
            server = _server(tmp_path_factory.mktemp("nodelay"), *args, env=env)
            running[name] = (server, Kernel.start(server))
        yield running
    finally:
        for server, kernel in running.values():
            kernel.shutdown()
            stop_jupyter(server)


def _probe(server: JupyterServer) -> dict[str, Any]:
    with server.client() as client:
        response = client.get(f"{server.url}nodelay-probe", headers=server.auth)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result


def _server_side_nodelay(server: JupyterServer, kernel: Kernel, protocol: str | None) -> bool:
    """TCP_NODELAY of the server's end of a kernel websocket this test opens (``protocol`` offered)."""
    url = f"{server.ws_url}api/kernels/{kernel.id}/channels?session_id={uuid.uuid4().hex}"
    offered = [protocol] if protocol else None
    with connect(url, additional_headers=server.auth, subprotocols=offered, proxy=None, open_timeout=60) as ws:  # type: ignore[arg-type]
        assert ws.subprotocol == protocol
        kernel_info(ws, protocol)
        mine = list(ws.local_address[:2])
        found = [s for s in _probe(server)["sockets"] if s["peer"] == mine and s["local"][1] == server.port]
    assert len(found) == 1, found
    return bool(found[0]["nodelay"])


@pytest.mark.parametrize("protocol", [None, V1], ids=["default protocol", "v1 protocol"])
@pytest.mark.parametrize("setup", ["on", "off"])
def test_kernel_websocket_nodelay_follows_the_switch(servers: Servers, setup: str, protocol: str | None) -> None:
    server, kernel = servers[setup]
    assert _server_side_nodelay(server, kernel, protocol) is (setup == "on")


@pytest.mark.parametrize("setup", ["admin class", "extension class"])
def test_a_connection_class_set_by_an_admin_or_extension_is_kept_with_nodelay(servers: Servers, setup: str) -> None:
    server, kernel = servers[setup]
    before = _probe(server)
    assert "MarkedConnection" in before["class"]
    assert _server_side_nodelay(server, kernel, V1) is True
    assert _probe(server)["connects"] == before["connects"] + 1  # that class made the connection


def test_the_zmq_legs_between_server_and_kernel_have_nagle_off(servers: Servers) -> None:
    """libzmq sets TCP_NODELAY on its TCP connections itself, on both ends, whatever the switch says."""
    server, kernel = servers["off"]
    code = (
        "import json\nfrom ipykernel.connect import get_connection_info\n"
        "from tests.nodelay_probe import tcp_sockets\n"
        "print(json.dumps({'info': json.loads(get_connection_info()), 'sockets': tcp_sockets()}))"
    )
    seen = json.loads(asyncio.run(kernel.execute(code)))
    info = seen["info"]
    ports = {info[f"{name}_port"] for name in ("shell", "iopub", "stdin", "control", "hb")}
    kernel_side = [s for s in seen["sockets"] if s["local"][1] in ports]
    server_side = [s for s in _probe(server)["sockets"] if s["peer"][1] in ports]
    assert {s["local"][1] for s in kernel_side} >= {info["shell_port"], info["iopub_port"]}, seen["sockets"]
    assert {s["peer"][1] for s in server_side} >= {info["shell_port"], info["iopub_port"]}
    assert all(s["nodelay"] for s in kernel_side + server_side), kernel_side + server_side


def test_with_nodelay_keeps_the_class_and_wraps_once() -> None:
    wrapped = with_nodelay(MarkedConnection)
    assert issubclass(wrapped, MarkedConnection) and issubclass(wrapped, NoDelay)
    assert wrapped.__name__ == "MarkedConnection" and with_nodelay(wrapped) is wrapped


# Two sliders: the kernel doubles the first into the second.
SLIDERS = """
import ipywidgets as w
from IPython.display import display
a = w.IntSlider(description="a", max=100)
b = w.IntSlider(description="b", max=200)
seen = []
def _double(change):
    seen.append(change["new"])
    b.value = 2 * change["new"]
a.observe(_double, "value")
display(a, b)
"""


@pytest.mark.browser
def test_ipywidgets_slider_round_trip_in_jupyterlab(lab: Lab, notebook: Any) -> None:
    """The page sets slider a, the kernel's observer sets slider b, the page shows b: with Nagle off."""
    write_notebook(lab, "sliders.ipynb", [("code", SLIDERS)])
    opened = notebook("sliders.ipynb")
    page = opened.page
    sliders = page.locator(".jp-OutputArea-output .widget-slider")
    sliders.nth(1).wait_for()
    readout_a, readout_b = (sliders.nth(i).locator(".widget-readout") for i in (0, 1))
    readout_a.click()
    page.keyboard.press("ControlOrMeta+A")
    page.keyboard.type("21")
    page.keyboard.press("Enter")
    page.wait_for_function("(el) => el.textContent.trim() === '42'", arg=readout_b.element_handle(), timeout=30_000)
    assert readout_a.text_content().strip() == "21"


def test_doctor_reports_the_switch_from_configuration_and_command_line(servers: Servers, tmp_path: Path) -> None:
    server, _ = servers["off"]
    (tmp_path / "jupyter_server_config.json").write_text(json.dumps({"Loopback": {"kernel_websocket_nodelay": False}}))
    runtime = {"JUPYTER_RUNTIME_DIR": server.env["JUPYTER_RUNTIME_DIR"]}
    default = _doctor(runtime)
    configured = _doctor({**runtime, "JUPYTER_CONFIG_DIR": str(tmp_path)})
    for out in (default, configured):
        assert out.returncode == 0 and "Traceback" not in out.stdout + out.stderr, out.stderr
        assert f"pid {server.proc.pid}, from its command line: OFF (" in out.stdout, out.stdout
    said = "servers started with this configuration: {} (c.Loopback.kernel_websocket_nodelay = {})"
    assert said.format("on", "True, the default") in default.stdout
    assert said.format("OFF", "False, set") in configured.stdout
