"""``benchmarks/run.py --compare REV``: the processes it starts for REV import REV's code, not this checkout's."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from loopback_asgi import fastpaths

ROOT = Path(__file__).resolve().parent.parent


def _servers() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_servers", ROOT / "benchmarks" / "servers.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


servers = _servers()


def _loaded(root: Path) -> str:
    """Where a process started the harness's way for ``root`` imports ``loopback_asgi`` from."""
    env, cwd = servers.project_env(root)
    cmd = servers.module_cmd(sys.executable, "loopback_asgi.cli", "--help")
    out = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    path = servers.loaded_from(servers.Proc(None, None, out.stdout.splitlines(keepends=True)))
    assert path is not None, out.stdout
    return str(path)


def test_a_commits_tree_runs_its_own_code_and_is_removed_afterwards() -> None:
    with servers.materialise("HEAD") as (tree, commit):
        assert len(commit) == 40
        assert (tree / "loopback_asgi" / "__init__.py").is_file()
        assert Path(_loaded(tree)).is_relative_to(tree)
        assert Path(_loaded(ROOT)).is_relative_to(ROOT)
    assert not tree.exists()


def test_a_name_that_is_no_commit_is_one_sentence() -> None:
    with pytest.raises(servers.RevError, match="names no commit"), servers.materialise("no-such-rev-0123"):
        pass


def test_a_without_rows_sidecar_runs_with_the_fast_path_switched_off() -> None:
    """``--without NAME``: the switch reaches the sidecar the row's Jupyter server launches, and the run sees it."""
    upstream, port = servers.start_upstream()
    jupyter, base = servers.start_jupyter(
        sys.executable, servers.project_extensions(), pythonpath=str(ROOT), env={fastpaths.ENV: "sidecar_ws_pipe"}
    )
    try:
        auth = {"Authorization": f"token {servers.TOKEN}"}
        assert httpx.get(f"{base}/loopback/app/{port}/json", headers=auth, timeout=60).status_code == 200
        ((_, environ),) = servers.launched_sidecars(jupyter)
        assert environ[fastpaths.ENV] == "sidecar_ws_pipe"
        assert environ["PYTHONPATH"] == str(ROOT)
    finally:
        jupyter.stop()
        upstream.stop()
