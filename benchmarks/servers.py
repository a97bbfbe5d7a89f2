"""The processes a benchmark run measures: the upstream, the sidecar, two Jupyter servers.

Every process is started in its own session and stopped by its process
group, so a sidecar that a Jupyter server launched goes with it. Readiness is
a line of output, awaited with a deadline; nothing here sleeps for a fixed
time. Only 127.0.0.1 is ever bound or contacted.
"""

from __future__ import annotations

import contextlib
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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
PEER_VENV = HERE / ".bench-venv-http"  # ignored by .gitignore's .bench-venv*/
PEER_PINS = ("jupyter-loopback==0.3.3", "jupyter-server-proxy==4.6.0", "jupyter_server")
PEER_VERSIONS = {"jupyter-loopback": "0.3.3", "jupyter-server-proxy": "4.6.0"}
TOKEN = "bench-token-0123456789"
# ``python -m MODULE ARGS`` that first says where ``loopback_asgi`` comes from, so a
# run shows which tree each process really runs. Like ``-m``, ``-c`` puts the
# working directory first on sys.path.
PROBE = (
    "import runpy, sys\n"
    "try:\n"
    "    import loopback_asgi\n"
    "    print('loopback_asgi from', loopback_asgi.__file__, flush=True)\n"
    "except ImportError:\n"
    "    pass\n"
    "runpy.run_module(sys.argv.pop(1), run_name='__main__', alter_sys=True)\n"
)
LOADED = re.compile(r"^loopback_asgi from (.+)$")


@dataclass
class Proc:
    """A child process (the leader of its own session) and what its readiness line said."""

    popen: subprocess.Popen[str]
    match: re.Match[str]
    lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None  # reads the output to its end, then closes the pipe

    def stop(self) -> None:
        """SIGTERM the process group, wait up to 10 s, then SIGKILL whatever is left in it."""
        try:
            self._stop()
        finally:
            if self.reader is not None:
                self.reader.join(10)

    def _stop(self) -> None:
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
        with popen.stdout:
            for line in popen.stdout:
                if len(lines) < 2000:
                    lines.append(line)
                if not found and (m := pattern.search(line)):
                    found.append(m)
                    event.set()
        event.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if not event.wait(timeout) or not found:
        proc = Proc(popen, re.match("", ""), lines, reader)
        proc.stop()
        tail = "".join(lines[-15:])
        shown = " ".join([arg for arg in cmd[1:] if arg not in ("-c", PROBE)][:2])
        raise RuntimeError(f"{Path(cmd[0]).name} {shown} did not become ready:\n{tail}")
    return Proc(popen, found[0], lines, reader)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# Kept on purpose: the fast-path switch, so a run can measure a fast path on and off.
PASSED_THROUGH = ("JUPYTER_LOOPBACK_FASTPATHS",)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment minus anything that would steer Jupyter or the sidecar away from defaults
    (but the fast-path switch, which a run sets on purpose)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k in PASSED_THROUGH or (not k.startswith(("JUPYTER_", "JPY_")) and k not in ("PYTHONPATH", "VIRTUAL_ENV"))
    }
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def start_upstream() -> tuple[Proc, int]:
    proc = start(
        [sys.executable, "-m", "tests.upstream", "--host", "127.0.0.1"],
        r"upstream listening on (\d+)",
        env=clean_env(PYTHONPATH=str(ROOT)),
    )
    return proc, int(proc.match[1])


def module_cmd(python: str, module: str, *args: str) -> list[str]:
    """``python -m module args``, announcing first the file ``loopback_asgi`` is imported from (see ``loaded_from``)."""
    return [python, "-c", PROBE, module, *args]


def loaded_from(proc: Proc) -> str | None:
    """The ``loopback_asgi`` file a process started by ``module_cmd`` imported, from its output."""
    return next((m[1] for line in proc.lines if (m := LOADED.match(line.strip()))), None)


def project_env(root: Path) -> tuple[dict[str, str], Path]:
    """Environment and working directory that make a process import the project from ``root``.

    ``python -m`` and ``-c`` put the working directory first on sys.path, and the
    editable install points at this checkout; so both name ``root``.
    """
    return clean_env(PYTHONPATH=str(root)), root


def start_sidecar(root: Path = ROOT) -> tuple[Proc, str]:
    """``jupyter-loopback serve --port 0 --token TOKEN`` from the tree ``root``; returns its ``http://127.0.0.1:PORT``."""
    env, cwd = project_env(root)
    cmd = module_cmd(sys.executable, "loopback_asgi.cli", "serve", "--port", "0", "--token", TOKEN)
    proc = start(cmd, r"on (http://[^/]+)/", env=env, cwd=cwd)
    return proc, proc.match[1]


class RevError(RuntimeError):
    """A commit that cannot be materialised, with the reason in one sentence."""


@contextlib.contextmanager
def materialise(rev: str) -> Iterator[tuple[Path, str]]:
    """The source tree of commit ``rev`` (``git archive``) in a temporary directory, removed afterwards.

    Yields the directory and the commit's full hash; raises ``RevError`` with
    one sentence when ``rev`` names no commit.
    """
    found = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    if found.returncode != 0:
        raise RevError(f"{rev!r} names no commit of {ROOT}")
    commit = found.stdout.strip()
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-rev-{commit[:9]}-"))
    try:
        archive = subprocess.Popen(["git", "archive", commit], stdout=subprocess.PIPE, cwd=ROOT)
        untar = subprocess.run(["tar", "-x", "-C", str(tmp)], stdin=archive.stdout, capture_output=True, timeout=300)
        assert archive.stdout is not None
        archive.stdout.close()
        if archive.wait(60) != 0 or untar.returncode != 0:
            raise RevError(f"git archive {commit[:9]} could not be unpacked: {untar.stderr.decode()[-200:]}")
        yield tmp, commit
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def launched_sidecars(proc: Proc) -> list[tuple[str, dict[str, str]]]:
    """The working directory and environment of each sidecar a Jupyter server launched: how it runs.

    They are the ``loopback_asgi.cli`` processes in the server's process group (Linux ``/proc``).
    """
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == proc.popen.pid:
            continue
        try:
            if os.getpgid(int(entry.name)) != proc.popen.pid:
                continue
            if b"loopback_asgi.cli" not in (entry / "cmdline").read_bytes():
                continue
            environ = (entry / "environ").read_bytes().split(b"\0")
            cwd = os.readlink(entry / "cwd")
        except (OSError, ValueError):
            continue  # gone, or not ours to read
        pairs = (item.decode(errors="replace").partition("=") for item in environ if b"=" in item)
        found.append((cwd, {name: value for name, _, value in pairs}))
    return found


def start_jupyter(
    python: str,
    extensions: dict[str, dict[str, object]],
    *,
    pythonpath: str | None = None,
    env: dict[str, str] | None = None,
) -> tuple[Proc, str]:
    """A ``jupyter server`` on 127.0.0.1 with token auth and its own config/data/runtime dirs.

    ``extensions`` are written as ``jupyter_server_config.d`` files (name -> JSON);
    ``env`` adds to its environment (and so to the sidecar's it launches).
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
    environment = clean_env(
        **(env or {}),
        JUPYTER_CONFIG_DIR=str(tmp / "config"),
        JUPYTER_DATA_DIR=str(tmp / "data"),
        JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
        JUPYTER_PLATFORM_DIRS="1",
        PATH=f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
        **({"PYTHONPATH": pythonpath} if pythonpath else {}),
    )
    cmd = [
        *module_cmd(python, "jupyter_server"),
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
    proc = start(cmd, r"is running at", env=environment, timeout=90, cwd=tmp)
    return proc, f"http://127.0.0.1:{port}"


def project_extensions(root: Path = ROOT) -> dict[str, dict[str, object]]:
    """The ``jupyter-config`` files of the tree ``root``, so the adapter is on even if the install skipped them."""
    confd = root / "jupyter-config" / "jupyter_server_config.d"
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
