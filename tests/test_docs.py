"""The docs site builds strictly, and every code block in README.md and docs/ runs or says why not."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .docs_blocks import blocks, run_page

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run(
        [str(VENV_BIN / "mkdocs"), "build", "--strict", "--config-file", str(config), "--site-dir", str(site)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _scratch_site(tmp_path: Path) -> Path:
    """A copy of the site's sources (config, docs, the packages the API pages read)."""
    for name in ("docs", "loopback_asgi", "comm_bridge", "jupyter_loopback"):
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    return tmp_path / "mkdocs.yml"


def test_site_builds_strictly(tmp_path: Path) -> None:
    out = _build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert out.returncode == 0, out.stdout + out.stderr
    assert (tmp_path / "site" / "index.html").is_file()


def test_a_broken_link_fails_the_build(tmp_path: Path) -> None:
    config = _scratch_site(tmp_path)
    with (tmp_path / "docs" / "index.md").open("a") as page:
        page.write("\nSee [the missing page](no-such-page.md).\n")
    out = _build(config, tmp_path / "site")
    assert out.returncode != 0
    assert "no-such-page.md" in out.stdout + out.stderr


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_code_blocks_run(page: Path, tmp_path: Path) -> None:
    failures = run_page(page, tmp_path, VENV_BIN)
    assert not failures, "\n\n".join(f"{f.block.path}:{f.block.line} failed:\n{f.output[-3000:]}" for f in failures)


def test_a_broken_block_fails(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "Runs:\n\n```python\nx = 1\n```\n\n```python\nassert x == 2, 'x is not 2'\n```\n\n"
        "```bash\nfalse\n```\n\n<!-- not-run: needs a display -->\n```bash\nexit 3\n```\n"
    )
    failures = run_page(page, tmp_path, VENV_BIN)
    assert [(f.block.line, f.block.lang) for f in failures] == [(7, "python"), (11, "bash")]
    assert "x is not 2" in failures[0].output


def test_a_not_run_mark_needs_a_reason(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("<!-- not-run: -->\n```python\npass\n```\n")
    with pytest.raises(ValueError, match="needs a reason"):
        blocks(page)


def test_every_marked_block_names_a_reason() -> None:
    skipped = [b for page in PAGES for b in blocks(page) if b.skip is not None]
    assert all(len(b.skip or "") >= 10 for b in skipped), [f"{b.path}:{b.line}" for b in skipped]


def test_works_where_matches_the_tests(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "works_where.py"), "--check"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr


def test_works_where_names_only_marked_tests(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import works_where
    finally:
        sys.path.remove(str(ROOT / "tools"))
    (tmp_path / "test_scratch.py").write_text(
        "import pytest\n\n@pytest.mark.proves('marimo', 'bridge')\ndef test_one():\n    pass\n\n"
        "def test_two():\n    pass\n"
    )
    found = works_where.proofs(tmp_path)
    assert found == {("marimo", "bridge"): [f"{tmp_path.name}/test_scratch.py::test_one"]}


def test_js_reference_matches_the_source() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "js_reference.py"), "--check"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr


def test_benchmark_page_is_what_its_saved_run_gives() -> None:
    run = [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--check-docs"]
    out = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_the_modules_the_architecture_page_names_exist() -> None:
    page = (ROOT / "docs" / "architecture.md").read_text()
    named = set(re.findall(r"\b(?:loopback_asgi|comm_bridge|jupyter_loopback)/[\w/]+\.(?:py|js)\b", page))
    assert len(named) >= 20
    assert not [path for path in sorted(named) if not (ROOT / path).is_file()]
