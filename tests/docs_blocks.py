"""The code blocks of README.md and docs/: found, and run as a reader would run them.

A fenced block in ``python``, ``bash`` or ``sh`` runs unless the line just
before it is ``<!-- not-run: <reason> -->`` (a reason is required). A page's
Python blocks run in order in one fresh interpreter, as cells of one notebook;
its shell blocks run one by one under ``bash -euo pipefail``. Both run in a
scratch directory with the project's venv first on ``PATH``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RUNNABLE", "Block", "Failure", "blocks", "run_page"]

RUNNABLE = {"python": "python", "py": "python", "bash": "bash", "sh": "bash", "shell": "bash"}
FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)[^\n]*$")
NOT_RUN = re.compile(r"^<!--\s*not-run:\s*(?P<reason>.*?)\s*-->$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str  # "python" or "bash", or the fence's own word for blocks that never run
    code: str
    skip: str | None  # the reason it is not run

    @property
    def runnable(self) -> bool:
        return self.lang in ("python", "bash") and self.skip is None


@dataclass(frozen=True)
class Failure:
    block: Block
    output: str


def blocks(path: Path) -> list[Block]:
    """Every fenced block of ``path``, with the reason it is not run if it is marked."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, start = m["fence"], i
        i += 1
        body: list[str] = []
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        i += 1
        prev = next((lines[j].strip() for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        marked = NOT_RUN.match(prev)
        if marked and not marked["reason"]:
            raise ValueError(f"{path}:{start + 1}: a not-run mark needs a reason")
        lang = RUNNABLE.get(m["lang"].lower(), m["lang"].lower())
        out.append(Block(path, start + 1, lang, "\n".join(body) + "\n", marked["reason"] if marked else None))
    return out


_DRIVER = """
import json, sys, traceback
ns = {"__name__": "__main__"}
for line, code in json.load(sys.stdin):
    try:
        exec(compile(code, f"<block at line {line}>", "exec"), ns)
    except BaseException:
        print(f"BLOCK-FAILED {line}", flush=True)
        traceback.print_exc()
        sys.exit(1)
"""


def run_page(path: Path, workdir: Path, venv_bin: Path, timeout: float = 120.0) -> list[Failure]:
    """Run the runnable blocks of ``path`` in ``workdir``; the blocks that failed, with their output."""
    env = {**os.environ, "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONUNBUFFERED": "1"}
    runnable = [b for b in blocks(path) if b.runnable]
    failures: list[Failure] = []
    python = [b for b in runnable if b.lang == "python"]
    if python:
        payload = json.dumps([[b.line, b.code] for b in python])
        proc = _run([sys.executable, "-c", _DRIVER], payload, workdir, env, timeout)
        if proc.returncode != 0:
            m = re.search(r"BLOCK-FAILED (\d+)", proc.stdout)
            failed = next((b for b in python if m and b.line == int(m[1])), python[0])
            failures.append(Failure(failed, proc.stdout + proc.stderr))
    for block in (b for b in runnable if b.lang == "bash"):
        proc = _run(["bash", "-euo", "pipefail", "-c", block.code], "", workdir, env, timeout)
        if proc.returncode != 0:
            failures.append(Failure(block, proc.stdout + proc.stderr))
    return failures


Completed = subprocess.CompletedProcess[str]


def _run(argv: list[str], stdin: str, cwd: Path, env: dict[str, str], timeout: float) -> Completed:
    """Run ``argv`` in a session of its own; whatever it leaves running is ended with it."""
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=env,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return subprocess.CompletedProcess(argv, -9, out, err + f"\ntimed out after {timeout:.0f} s")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)
