"""The CI's install step asks apt only for what is missing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / ".ci" / "system-deps"
BASH = shutil.which("bash") or "/bin/bash"


def _dry_run(tmp_path: Path, present: list[str]) -> list[str]:
    """Run the script with a PATH that holds only ``present`` (as stand-in commands)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in present:
        tool = bin_dir / name
        tool.write_text("#!/bin/sh\nexit 0\n")
        tool.chmod(0o755)
    env = {**os.environ, "PATH": str(bin_dir)}
    out = subprocess.run([BASH, str(SCRIPT), "--dry-run"], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


@pytest.mark.parametrize(
    ("present", "installs"),
    [
        (["node", "npm"], ["chromium"]),  # Node.js from NodeSource: npm came with it
        ([], ["chromium", "nodejs", "npm"]),  # a bare machine
        (["chromium", "node"], ["npm"]),
        (["chromium", "node", "npm"], []),
    ],
)
def test_installs_only_what_is_missing(tmp_path: Path, present: list[str], installs: list[str]) -> None:
    assert _dry_run(tmp_path, present) == installs
