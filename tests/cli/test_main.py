"""``jupyter-loopback serve`` (loopback_asgi/cli/main.py): sockets, tokens, permissions."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import start


def test_tcp_bind_generates_and_prints_a_token(upstream: int) -> None:
    proc = start(
        [sys.executable, "-m", "loopback_asgi.cli", "serve", "--port", "0"],
        r"on (http://[^/]+)/\?token=(\S+)",
        env={"JUPYTER_LOOPBACK_TOKEN": ""},
    )
    try:
        base, token = proc.match[1], proc.match[2]
        assert len(token) >= 24
        assert httpx.get(f"{base}/app/{upstream}/json", trust_env=False).status_code == 401
        ok = httpx.get(f"{base}/app/{upstream}/json", params={"token": token}, trust_env=False)
        assert ok.json() == {"hello": "world"}
    finally:
        proc.stop()


def test_unix_socket_is_private(tmp_path: Path, upstream: int) -> None:
    sock = tmp_path / "private" / "sidecar.sock"
    proc = start(
        [sys.executable, "-m", "loopback_asgi.cli", "serve", "--unix-socket", str(sock)],
        r"on unix:(\S+)",
    )
    try:
        assert stat.S_IMODE(os.stat(sock.parent).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
        transport = httpx.HTTPTransport(uds=str(sock))
        with httpx.Client(transport=transport, trust_env=False) as client:
            r = client.get(f"http://sidecar/app/{upstream}/json")
        assert r.json() == {"hello": "world"}
    finally:
        proc.stop()


def test_unix_socket_in_a_shared_directory_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)
    import subprocess

    result = subprocess.run(
        [sys.executable, "-m", "loopback_asgi.cli", "serve", "--unix-socket", str(shared / "s.sock")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "must be a 0700 directory" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args", [[], ["--port", "notaport"]])
def test_bad_arguments_get_one_clear_line(args: list[str]) -> None:
    import subprocess

    result = subprocess.run(
        [sys.executable, "-m", "loopback_asgi.cli", "serve", *args], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.strip()
