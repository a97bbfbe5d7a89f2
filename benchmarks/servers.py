"""The processes a benchmark run measures: the upstream, the sidecar, two Jupyter servers.

Every process is started in its own session and stopped by its process
group, so a sidecar that a Jupyter server launched goes with it. Readiness is
a line of output, awaited with a deadline; nothing here sleeps for a fixed
time. Only 127.0.0.1 is ever bound or contacted.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
PEER_VENV = HERE / ".bench-venv-http"  # ignored by .gitignore's .bench-venv*/
PEER_PINS = ("jupyter-loopback==0.3.3", "jupyter-server-proxy==4.6.0", "jupyter_server")
PEER_VERSIONS = {"jupyter-loopback": "0.3.3", "jupyter-server-proxy": "4.6.0"}
TOKEN = "bench-token-0123456789"


@dataclass
class Proc:
    """A child process (the leader of its own session) and what its readiness line said."""

    popen: subprocess.Popen[str]
    match: re.Match[str]
    lines: list[str] = field(default_factory=list)

    def stop(self) -> None:
        """SIGTERM the process group, wait up to 10 s, then SIGKILL whatever is left in it."""
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            pass
        try:
            # A child the leader started (a sidecar) and left behind; the group id
            # stays reserved while any member lives, so this reaches no one else.
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        self.popen.wait(10)


def start(
    cmd: Sequence[str], ready: str, *, env: dict[str, str] | None = None, timeout: float = 60, cwd: Path = ROOT
) -> Proc:
    """Start ``cmd`` in ``cwd`` and wait (at most ``timeout`` s) for an output line matching ``ready``."""
    popen = subprocess.Popen(
        list(cmd),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env if env is not None else {**os.environ, "PYTHONUNBUFFERED": "1"},
        cwd=cwd,
        start_new_session=True,
    )
    pattern = re.compile(ready)
    found: list[re.Match[str]] = []
    lines: list[str] = []
    event = threading.Event()

    def read() -> None:
        assert popen.stdout is not None
        for line in popen.stdout:
            if len(lines) < 2000:
                lines.append(line)
            if not found and (m := pattern.search(line)):
                found.append(m)
                event.set()
        event.set()

    threading.Thread(target=read, daemon=True).start()
    if not event.wait(timeout) or not found:
        proc = Proc(popen, re.match("", ""), lines)
        proc.stop()
        tail = "".join(lines[-15:])
        raise RuntimeError(f"{Path(cmd[0]).name} {' '.join(cmd[1:3])} did not become ready:\n{tail}")
    return Proc(popen, found[0], lines)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def clean_env(**extra: str) -> dict[str, str]:
    """The environment minus anything that would steer Jupyter or the sidecar away from defaults."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("JUPYTER_", "JPY_")) and k not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def start_upstream() -> tuple[Proc, int]:
    proc = start(
        [sys.executable, "-m", "tests.upstream", "--host", "127.0.0.1"],
        r"upstream listening on (\d+)",
        env=clean_env(PYTHONPATH=str(ROOT)),
    )
    return proc, int(proc.match[1])


def start_sidecar() -> tuple[Proc, str]:
    """``jupyter-loopback serve --port 0 --token TOKEN``; returns its ``http://127.0.0.1:PORT``."""
    proc = start(
        [sys.executable, "-m", "loopback_asgi.cli", "serve", "--port", "0", "--token", TOKEN],
        r"on (http://[^/]+)/",
        env=clean_env(PYTHONPATH=str(ROOT)),
    )
    return proc, proc.match[1]


def start_jupyter(
    python: str, extensions: dict[str, dict[str, object]], *, pythonpath: str | None = None
) -> tuple[Proc, str]:
    """A ``jupyter server`` on 127.0.0.1 with token auth and its own config/data/runtime dirs.

    ``extensions`` are written as ``jupyter_server_config.d`` files (name -> JSON).
    Returns once it logs "is running at", which comes just before it listens.
    """
    tmp = Path(tempfile.mkdtemp(prefix="bench-jupyter-"))
    confd = tmp / "config" / "jupyter_server_config.d"
    confd.mkdir(parents=True)
    for name, content in extensions.items():
        (confd / f"{name}.json").write_text(json.dumps(content))
    (tmp / "root").mkdir()
    port = free_port()
    bindir = str(Path(python).parent)
    env = clean_env(
        JUPYTER_CONFIG_DIR=str(tmp / "config"),
        JUPYTER_DATA_DIR=str(tmp / "data"),
        JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
        JUPYTER_PLATFORM_DIRS="1",
        PATH=f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
        **({"PYTHONPATH": pythonpath} if pythonpath else {}),
    )
    cmd = [
        python,
        "-m",
        "jupyter_server",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        "--ServerApp.open_browser=False",
        f"--IdentityProvider.token={TOKEN}",
        f"--ServerApp.root_dir={tmp / 'root'}",
        *(["--allow-root"] if os.geteuid() == 0 else []),
    ]
    # Not from the checkout: ``python -m`` puts the working directory first on
    # sys.path, where this project's ``jupyter_loopback`` would shadow 0.3.3's.
    proc = start(cmd, r"is running at", env=env, timeout=90, cwd=tmp)
    return proc, f"http://127.0.0.1:{port}"


def project_extensions() -> dict[str, dict[str, object]]:
    """The project's own ``jupyter-config`` files, so the adapter is on even if the install skipped them."""
    confd = ROOT / "jupyter-config" / "jupyter_server_config.d"
    return {p.stem: json.loads(p.read_text()) for p in sorted(confd.glob("*.json"))}


def peer_extensions() -> dict[str, dict[str, object]]:
    """jupyter-loopback 0.3.3 has no extension of its own: a library mounts it (``loopback033_ext``)."""
    return {"loopback033_ext": {"ServerApp": {"jpserver_extensions": {"loopback033_ext": True}}}}


def peer_python(create: bool = True) -> str:
    """The Python of ``benchmarks/.bench-venv-http`` with the pinned peers; created on first use.

    The peers live in their own environment because jupyter-loopback 0.3.3's
    distribution name is this project's. Raises ``RuntimeError`` with the reason
    when the environment cannot be made.
    """
    python = PEER_VENV / "bin" / "python"
    names = list(PEER_VERSIONS)
    probe = f"import importlib.metadata as m, json; print(json.dumps({{d: m.version(d) for d in {names!r}}}))"

    def versions() -> dict[str, str] | None:
        if not python.exists():
            return None
        out = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=60)
        return json.loads(out.stdout) if out.returncode == 0 else None

    if versions() == PEER_VERSIONS:
        return str(python)
    if not create:
        raise RuntimeError(f"{PEER_VENV} is missing or has other versions")
    base = shutil.which("python3") or sys.executable
    steps = [[base, "-m", "venv", "--clear", str(PEER_VENV)], [str(python), "-m", "pip", "install", "-q", *PEER_PINS]]
    for step in steps:
        print(f"  setting up peers: {' '.join(step[-3:])}", flush=True)
        out = subprocess.run(step, capture_output=True, text=True, timeout=900)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(step[:3])} failed: {(out.stderr or out.stdout).strip()[-300:]}")
    if versions() != PEER_VERSIONS:
        raise RuntimeError(f"{PEER_VENV} does not hold {PEER_VERSIONS}")
    return str(python)
