"""Fixtures for the compatibility tests: a second venv with third-party libraries from PyPI, unchanged.

``make .venv-compat/.installed`` (a step of ``make test``) builds
``.venv-compat``: this checkout installed editable, with localtileserver
1.0.0, ipyleaflet, JupyterLab and ipykernel from the index. Servers started
here run that venv's interpreter, so its kernels, server extensions and
``jupyter_server_config.d`` files are the ones a user of those libraries gets.

- :func:`start_compat_server`: ``jupyter server`` from ``.venv-compat``, as
  :class:`JupyterServer`; JupyterLab from it is ``start_lab(home, python=compat_python)``.
- fixture ``compat_python``: the venv's interpreter, checked to import this
  checkout (a test module imports it by name, as it imports this module's
  functions).
"""

from __future__ import annotations

import subprocess

import pytest

from .conftest import ROOT
from .jupyter_fixtures import JupyterServer, start_jupyter

COMPAT_VENV = ROOT / ".venv-compat"
COMPAT_PYTHON = COMPAT_VENV / "bin" / "python"


def check_compat_venv() -> str:
    """The compat venv's interpreter; fails the test if the venv is missing or holds another jupyter-loopback."""
    if not COMPAT_PYTHON.exists():
        pytest.fail(f"{COMPAT_VENV} is missing: run `make .venv-compat/.installed`.")
    # -I: neither the working directory nor PYTHONPATH may stand in for the installed package.
    code = "import jupyter_loopback, loopback_asgi; print(jupyter_loopback.__file__); print(loopback_asgi.__version__)"
    out = subprocess.run([str(COMPAT_PYTHON), "-I", "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"{COMPAT_VENV} does not import this checkout:\n{out.stderr}"
    path, _version = out.stdout.split()
    assert path.startswith(f"{ROOT}/jupyter_loopback/"), f"{COMPAT_VENV} imports jupyter_loopback from {path}"
    return str(COMPAT_PYTHON)


def start_compat_server(base_url: str = "/", *args: str, env: dict[str, str] | None = None) -> JupyterServer:
    """``jupyter server`` from ``.venv-compat`` (:func:`tests.jupyter_fixtures.start_jupyter`)."""
    return start_jupyter(base_url, *args, env=env, python=str(COMPAT_PYTHON))


@pytest.fixture(scope="session")
def compat_python() -> str:
    return check_compat_venv()
