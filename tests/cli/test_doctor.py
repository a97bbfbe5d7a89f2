"""``jupyter-loopback doctor`` against a real running server and against none."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from loopback_asgi.cli.doctor import environment_kind
from tests.jupyter_fixtures import JupyterServer

ROOT = Path(__file__).resolve().parents[2]


def _doctor(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("JPY_", "JUPYTER_LOOPBACK", "JUPYTERHUB_"))}
    return subprocess.run(
        [sys.executable, "-m", "loopback_asgi.cli", "doctor", "--timeout", "30"],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_doctor_round_trips_through_a_running_server(jupyter_base: JupyterServer) -> None:
    out = _doctor({"JUPYTER_RUNTIME_DIR": jupyter_base.env["JUPYTER_RUNTIME_DIR"]})
    assert out.returncode == 0 and "Traceback" not in out.stdout + out.stderr, out.stderr
    text = out.stdout
    assert "plain Python" in text
    assert "app: ports 1024-65535" in text
    assert "loopback_asgi is enabled" in text
    assert 'autodetect_prefix("app") is None here' in text
    assert f"pid {jupyter_base.proc.pid} at {jupyter_base.url}" in text
    assert f"{jupyter_base.url}loopback/app/" in text and "OK, round trip in" in text, text


def test_doctor_without_servers_still_exits_0() -> None:
    with tempfile.TemporaryDirectory() as runtime:
        out = _doctor({"JUPYTER_RUNTIME_DIR": runtime, "JPY_PARENT_PID": "1"})
    assert out.returncode == 0 and "Traceback" not in out.stdout + out.stderr, out.stderr
    assert "no running jupyter-server found" in out.stdout
    assert "a Jupyter kernel whose server announced no loopback route" in out.stdout


def test_environment_kind() -> None:
    assert environment_kind({}) == "plain Python (not a Jupyter kernel)"
    assert environment_kind({"COLAB_RELEASE_TAG": "x", "JPY_PARENT_PID": "1"}).startswith("Google Colab")
    assert environment_kind({"VSCODE_PID": "1"}).startswith("VS Code")
    assert "JupyterHub" in environment_kind({"JUPYTERHUB_SERVICE_PREFIX": "/user/a/"})


def test_doctor_reports_a_namespace_that_fails_to_load(tmp_path: Path) -> None:
    dist = tmp_path / "brokenlib-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: brokenlib\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[jupyter_loopback.namespaces]\nbroken = brokenlib_missing:NAMESPACE\n")
    with tempfile.TemporaryDirectory() as runtime:
        out = _doctor({"JUPYTER_RUNTIME_DIR": runtime, "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"})
    assert out.returncode == 0 and "Traceback" not in out.stdout + out.stderr, out.stderr
    assert "broken: FAILED to load: ModuleNotFoundError" in out.stdout
    assert "app: ports 1024-65535" in out.stdout
