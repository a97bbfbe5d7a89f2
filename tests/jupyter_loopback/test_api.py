"""jupyter_loopback, the 0.3.x API: signatures, a light import, and the kernel side with no server behind it."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from typing import Any

import pytest

import jupyter_loopback
from tests.comm_fixtures import Bridge, Kernel
from tests.conftest import ROOT

P = inspect.Parameter

# 0.3.3's signatures, parameter by parameter: (name, kind, default).
SIGNATURES_0_3_3: dict[str, list[tuple[str, Any, Any]]] = {
    "autodetect_prefix": [
        ("namespace", P.POSITIONAL_OR_KEYWORD, P.empty),
        ("template", P.KEYWORD_ONLY, "{namespace}-proxy/{{port}}"),
    ],
    "enable_comm_bridge": [("display", P.KEYWORD_ONLY, True)],
    "is_comm_bridge_enabled": [],
    "is_in_jupyter_kernel": [],
    "on_request": [("namespace", P.POSITIONAL_OR_KEYWORD, P.empty), ("kind", P.POSITIONAL_OR_KEYWORD, P.empty)],
    "off_request": [("namespace", P.POSITIONAL_OR_KEYWORD, P.empty), ("kind", P.POSITIONAL_OR_KEYWORD, P.empty)],
    "intercept_localhost": [
        ("port", P.POSITIONAL_OR_KEYWORD, P.empty),
        ("path_prefix", P.KEYWORD_ONLY, None),
        ("display", P.KEYWORD_ONLY, True),
    ],
    "setup_proxy_handler": [
        ("web_app", P.POSITIONAL_OR_KEYWORD, P.empty),
        ("namespace", P.POSITIONAL_OR_KEYWORD, P.empty),
        ("handler_cls", P.KEYWORD_ONLY, "LoopbackProxyHandler"),
    ],
}


@pytest.mark.parametrize("name", sorted(SIGNATURES_0_3_3))
def test_signature_is_0_3_3s(name: str) -> None:
    """Every 0.3.3 parameter, in order, kind and default; anything added is keyword-only with a default."""
    params = list(inspect.signature(getattr(jupyter_loopback, name)).parameters.values())
    expected = SIGNATURES_0_3_3[name]
    got = [
        (p.name, p.kind, p.default.__name__ if isinstance(p.default, type) and p.default is not P.empty else p.default)
        for p in params[: len(expected)]
    ]
    assert got == expected
    for extra in params[len(expected) :]:
        assert extra.kind is P.KEYWORD_ONLY and extra.default is not P.empty, extra


def test_setup_proxy_handler_default_is_the_exported_base_class() -> None:
    default = inspect.signature(jupyter_loopback.setup_proxy_handler).parameters["handler_cls"].default
    assert default is jupyter_loopback.LoopbackProxyHandler


HEAVY = ("tornado", "jupyter_server", "uvicorn", "starlette", "httpx", "websockets", "anywidget", "ipywidgets")

IMPORTS = """
import json, sys, time
before = set(sys.modules)
started = time.perf_counter()
{statement}
took = time.perf_counter() - started
print(json.dumps({{"new": sorted(set(sys.modules) - before), "ms": took * 1000}}))
"""


def _imported(statement: str) -> dict[str, Any]:
    """What ``statement`` imports in a fresh interpreter that has imported nothing of ours."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", IMPORTS.format(statement=statement)], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


@pytest.mark.parametrize(
    "statement",
    [
        "import jupyter_loopback",
        "from jupyter_loopback import autodetect_prefix, is_in_jupyter_kernel, is_comm_bridge_enabled, on_request",
        "import jupyter_loopback; jupyter_loopback.autodetect_prefix('x'); jupyter_loopback.is_comm_bridge_enabled()",
        "from loopback_asgi import browser_url, autodetect_prefix, Namespace",
    ],
)
def test_kernel_side_imports_are_light(statement: str) -> None:
    """Only the standard library and this project's kernel-side modules (a kernel has the former already)."""
    found = {name.split(".")[0] for name in _imported(statement)["new"]}
    assert sorted(found & set(HEAVY)) == [], statement
    assert sorted(found - sys.stdlib_module_names - {"jupyter_loopback", "loopback_asgi"}) == [], statement


@pytest.mark.parametrize(
    ("statement", "loads"),
    [
        ("from loopback_asgi import create_app", "starlette"),
        ("from loopback_asgi import setup_proxy_handler", "tornado"),
        ("from jupyter_loopback import setup_proxy_handler", "jupyter_server"),
        ("from jupyter_loopback import LoopbackProxyHandler", "tornado"),
        ("from jupyter_loopback import CommBridge", "anywidget"),
    ],
)
def test_heavy_names_load_on_first_use(statement: str, loads: str) -> None:
    assert loads in {name.split(".")[0] for name in _imported(statement)["new"]}


def test_unknown_names_raise_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = jupyter_loopback.nope  # type: ignore[attr-defined]
    assert set(jupyter_loopback.__all__) <= set(dir(jupyter_loopback))


def test_reserved_namespace_is_refused() -> None:
    with pytest.raises(ValueError, match="__loopback__"):
        jupyter_loopback.on_request("__loopback__", "fetch")


def _plain_python(code: str, env: dict[str, str]) -> str:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("JPY_", "JUPYTER"))}
    run = subprocess.run(
        [sys.executable, "-c", code],
        env={**base, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


# What 0.3.x guessed from: Colab sets JPY_SESSION_NAME, spawners JPY_BASE_URL / the Hub prefix.
COLAB_LIKE = {
    "JPY_SESSION_NAME": "/content/notebook.ipynb",
    "JPY_PARENT_PID": "1",
    "COLAB_RELEASE_TAG": "release-colab_20261201-060000",
    "JUPYTERHUB_SERVICE_PREFIX": "/user/alice/",
    "JPY_BASE_URL": "/user/alice/",
}


@pytest.mark.parametrize("env", [{}, COLAB_LIKE])
def test_plain_python_has_no_prefix(env: dict[str, str]) -> None:
    code = (
        "import jupyter_loopback as jl\n"
        "print(jl.autodetect_prefix('localtileserver'), jl.autodetect_prefix('mylib', template='x/{namespace}'),"
        " jl.is_in_jupyter_kernel(), jl.is_comm_bridge_enabled())"
    )
    assert _plain_python(code, env) == "None None False False"


def test_environment_overrides_apply_to_the_facade() -> None:
    code = "import jupyter_loopback as jl\nprint(jl.autodetect_prefix('lts'))"
    assert _plain_python(code, {**COLAB_LIKE, "JUPYTER_LOOPBACK_PREFIX": "/p/{namespace}/{port}"}) == "/p/lts/{port}"
    both = {"JUPYTER_LOOPBACK_PREFIX": "/p/{port}", "JUPYTER_LOOPBACK_DISABLE": "1"}
    assert _plain_python(code, both) == "None"


KERNEL_CHECK = """
import json
import jupyter_loopback as jl
print(json.dumps({"prefix": jl.autodetect_prefix("localtileserver"), "kernel": jl.is_in_jupyter_kernel(),
                  "enabled": jl.is_comm_bridge_enabled()}))
"""

REGISTER = """
import jupyter_loopback as jl
BRIDGE = jl.enable_comm_bridge(display=False)

@jl.on_request("mylib", "get_tile")
def get_tile(data, buffers):
    return {"z": data["z"], "got": [bytes(b).decode() for b in buffers]}, [b"\\x89PNG tile"]

print(jl.enable_comm_bridge(display=False) is BRIDGE, isinstance(BRIDGE, jl.CommBridge), jl.is_comm_bridge_enabled())
"""


async def test_kernel_with_no_server_and_colab_like_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """A real kernel with no jupyter-server: no prefix, and the 0.3.x bridge API works over the comm."""
    for name, value in COLAB_LIKE.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("JUPYTER_LOOPBACK_ROUTE", raising=False)
    kernel = await Kernel().start()
    try:
        found = json.loads(await kernel.execute(KERNEL_CHECK))
        assert found == {"prefix": None, "kernel": True, "enabled": False}
        assert (await kernel.execute(REGISTER)).split() == ["True", "True", "True"]
        bridge = Bridge(kernel, await kernel.widget("__jupyter_loopback__"))
        status, data, buffers = await bridge.request("mylib", "get_tile", {"z": 8}, [b"req"])
        assert (status, data, [bytes(b) for b in buffers]) == ("ok", {"z": 8, "got": ["req"]}, [b"\x89PNG tile"])
        out = await kernel.execute("print(jl.off_request('mylib', 'get_tile'), jl.off_request('mylib', 'get_tile'))")
        assert out.split() == ["True", "False"]
        status, data, _ = await bridge.request("mylib", "get_tile", {"z": 8})
        assert status == "error"
    finally:
        await kernel.stop()
