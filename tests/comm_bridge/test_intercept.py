"""intercept_localhost and is_comm_bridge_enabled in a real kernel: the synced state, the fallback, bad input."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

import comm_bridge
from tests.comm_fixtures import Kernel, KernelError

pytestmark = pytest.mark.asyncio(loop_scope="module")

PROMISED = {
    "CommBridge",
    "Handler",
    "enable_comm_bridge",
    "intercept_localhost",
    "is_comm_bridge_enabled",
    "off_request",
    "on_request",
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def kernel() -> AsyncIterator[Kernel]:
    kernel = await Kernel().start()
    try:
        yield kernel
    finally:
        await kernel.stop()


async def test_exports() -> None:
    assert sorted(comm_bridge.__all__) == sorted(PROMISED)
    assert all(callable(getattr(comm_bridge, name)) for name in PROMISED)


async def test_without_a_bridge_the_script_is_displayed(kernel: Kernel) -> None:
    out = await kernel.execute(
        """
import json
import comm_bridge
from IPython.utils.capture import capture_output
with capture_output() as shown:
    html = comm_bridge.intercept_localhost(8123, path_prefix="/base/mylib-proxy/8123/")
quiet = comm_bridge.intercept_localhost(8124, display=False)
print(json.dumps({
    "enabled": comm_bridge.is_comm_bridge_enabled(),
    "type": type(html).__module__ + "." + type(html).__name__,
    "script": html.data,
    "shown": [o.data.get("text/html") for o in shown.outputs],
    "quiet": "8124" in quiet.data,
}))
"""
    )
    got = json.loads(out)
    assert got["enabled"] is False
    assert got["type"] == "IPython.core.display.HTML"
    assert got["shown"] == [got["script"]]
    assert "port=8123" in got["script"] and 'prefix="/base/mylib-proxy/8123"' in got["script"]
    assert got["script"].startswith("<script>") and "interceptLocalhost(port,prefix)" in got["script"]
    assert got["quiet"] is True


async def test_with_a_bridge_the_synced_state_carries_the_ports(kernel: Kernel) -> None:
    out = await kernel.execute(
        """
from IPython.utils.capture import capture_output
bridge = comm_bridge.enable_comm_bridge(display=False)
with capture_output() as shown:
    for _ in range(2):  # idempotent
        comm_bridge.intercept_localhost(9001)
        comm_bridge.intercept_localhost(9002, path_prefix="/p/9002/")
    comm_bridge.intercept_localhost(9001, path_prefix="/later/9001")
    import numpy
    comm_bridge.intercept_localhost(numpy.uint16(9003))
print(json.dumps({
    "enabled": comm_bridge.is_comm_bridge_enabled(),
    "ports": bridge.intercepted_ports,
    "prefixes": bridge.intercepted_prefixes,
    "shown": len(shown.outputs),
    "keys": sorted(bridge.keys),
}))
"""
    )
    got = json.loads(out)
    assert got["enabled"] is True and got["shown"] == 0
    assert got["ports"] == [9001, 9002, 9003]
    assert got["prefixes"] == {"9002": "/p/9002", "9001": "/later/9001"}
    assert {"intercepted_ports", "intercepted_prefixes"} <= set(got["keys"])  # synced to the page


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("intercept_localhost(0)", "port must be an integer from 1 to 65535, not 0."),
        ("intercept_localhost('8000')", "port must be an integer from 1 to 65535, not '8000'."),
        ("intercept_localhost(True)", "port must be an integer from 1 to 65535, not True."),
        ("intercept_localhost(8000, path_prefix='x/8000')", "path_prefix must be an absolute path"),
    ],
)
async def test_bad_input_is_one_sentence(kernel: Kernel, call: str, message: str) -> None:
    with pytest.raises(KernelError, match=r"^ValueError: " + message.replace("(", r"\(").replace(")", r"\)")):
        await kernel.execute(f"comm_bridge.{call}")
