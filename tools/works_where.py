"""Generate docs/works-where.md's table from the tests marked ``@pytest.mark.proves(env, route)``.

A cell says "proven" only where a test carries that mark, and names the
tests; every other cell says "not proven". ``--check`` exits 1 when the page
differs from what the tests say (CI runs it through ``tests/test_docs.py``).

    python tools/works_where.py            # print the table
    python tools/works_where.py --write    # put it into docs/works-where.md
    python tools/works_where.py --check
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from _generated import generated_page_main

__all__ = ["ENVIRONMENTS", "ROUTES", "proofs", "table"]

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "works-where.md"
START, END = "<!-- works-where:start -->", "<!-- works-where:end -->"

ENVIRONMENTS = {
    "local": "Plain Python, no Jupyter",
    "jupyterlab": "JupyterLab / Notebook 7",
    "jupyterhub": "JupyterHub / Binder",
    "vscode": "VS Code",
    "colab": "Colab",
    "shiny": "Shiny (shinywidgets)",
    "solara": "Solara",
    "marimo": "marimo",
    "voila": "Voila standalone",
}
ROUTES = {
    "route": "`loopback/<ns>/<port>` through Jupyter",
    "alias": "0.3.x `<ns>-proxy/<port>`",
    "mount": "`create_app()` mounted in the app",
    "bridge": "comm bridge",
    "direct": "`http://127.0.0.1:<port>`",
}


def _proves(node: ast.expr) -> tuple[str, str] | None:
    """``(env, route)`` if ``node`` is ``pytest.mark.proves("env", "route")``."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "proves"):
        return None
    args = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    if len(args) != 2 or args[0] not in ENVIRONMENTS or args[1] not in ROUTES:
        raise ValueError(f"proves() takes an environment of {list(ENVIRONMENTS)} and a route of {list(ROUTES)}")
    return args[0], args[1]


def _marks(nodes: list[ast.expr]) -> list[tuple[str, str]]:
    found = []
    for node in nodes:
        for sub in node.elts if isinstance(node, (ast.List, ast.Tuple)) else [node]:
            mark = _proves(sub)
            if mark:
                found.append(mark)
    return found


def proofs(tests: Path = ROOT / "tests") -> dict[tuple[str, str], list[str]]:
    """Each ``(env, route)`` with the test ids that prove it, from the marks in ``tests/**/test_*.py``."""
    out: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in sorted(tests.rglob("test_*.py")):
        module = ast.parse(path.read_text(encoding="utf-8"))
        module_marks = [
            mark
            for node in module.body
            if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in node.targets)
            for mark in _marks([node.value])
        ]
        for node in module.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
                for mark in module_marks + _marks(node.decorator_list):
                    out[mark].append(f"{path.relative_to(tests.parent)}::{node.name}")
    return dict(out)


def table(found: dict[tuple[str, str], list[str]]) -> str:
    """The markdown table (one row per environment, one column per route), then the tests behind each cell."""
    lines = [
        "| | " + " | ".join(ROUTES.values()) + " |",
        "|---|" + "---|" * len(ROUTES),
    ]
    behind = []
    for env, label in ENVIRONMENTS.items():
        cells = []
        for route, route_label in ROUTES.items():
            ids = sorted(found.get((env, route), []))
            if not ids:
                cells.append("not proven")
                continue
            name = ids[0].rpartition("::")[2]
            cells.append(f"**proven**: `{name}`" + (f" and {len(ids) - 1} more" if len(ids) > 1 else ""))
            behind.append(f"- {label}, {route_label}: " + ", ".join(f"`{i}`" for i in ids))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "The tests behind each proven cell:", "", *behind]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    return generated_page_main(argv, __doc__, PAGE, (START, END), lambda: table(proofs()), tool=__file__)


if __name__ == "__main__":
    raise SystemExit(main())
