"""The package layout is the architecture: no module imports a layer above its own.

Layers, lowest first: the kernel-side helpers and declarations; the upstream
transports; the sidecar app; the server protocols (uvicorn's) and the mount
helper; the Jupyter adapter (tornado's); the command line. The sidecar app
imports neither uvicorn's nor tornado's internals, so it mounts in any ASGI
server.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "loopback_asgi"

LAYERS = {
    "loopback_asgi": 0,
    "loopback_asgi.types": 0,
    "loopback_asgi.namespaces": 0,
    "loopback_asgi._builtin": 0,
    "loopback_asgi.kernel": 0,
    "loopback_asgi.reach": 0,
    "loopback_asgi.fastpaths": 0,
    "loopback_asgi._transports": 1,
    "loopback_asgi.sidecar": 2,
    "loopback_asgi.protocols": 3,
    "loopback_asgi.mount": 3,
    "loopback_asgi.jupyter": 4,
    "loopback_asgi.cli": 5,
}


def layer(module: str) -> int:
    """The layer of ``module``: that of the longest prefix in :data:`LAYERS`."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        name = ".".join(parts[:n])
        if name in LAYERS:
            return LAYERS[name]
    raise KeyError(f"{module} is in no layer: add it to LAYERS")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The loopback_asgi modules ``path`` imports (at the top or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("loopback_asgi"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("loopback_asgi")}
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=[module_name(p) for p in MODULES])
def test_no_module_imports_a_layer_above_it(path: Path) -> None:
    mine = layer(module_name(path))
    above = sorted(m for m in imports(path) if layer(m) > mine)
    assert not above, f"{module_name(path)} (layer {mine}) imports {above}"


def test_a_module_that_imports_upwards_is_caught(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from loopback_asgi.jupyter.extension import install\n")
    assert imports(bad) == {"loopback_asgi.jupyter.extension"}
    assert layer("loopback_asgi.jupyter.extension") > layer("loopback_asgi.sidecar.app")


def _loaded_after(code: str) -> set[str]:
    check = f"import sys\n{code}\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


def test_the_sidecar_app_imports_no_server_internals() -> None:
    loaded = _loaded_after("from loopback_asgi import create_app\ncreate_app()")
    assert "starlette" in loaded
    assert not loaded & {"uvicorn", "tornado", "jupyter_server"}


def test_a_kernel_imports_no_web_stack() -> None:
    loaded = _loaded_after("from loopback_asgi import browser_url, reach\nbrowser_url('app', 8000)")
    assert not loaded & {"starlette", "httpx", "uvicorn", "websockets", "tornado", "jupyter_server"}
