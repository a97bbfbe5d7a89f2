"""What the docs generators share: a page whose part between two markers is generated.

Each generator's ``main`` is ``generated_page_main(...)``: with no option it
prints the generated part, ``--write`` puts it into the page, ``--check`` exits
1 when the page differs (``tests/test_docs.py`` runs the checks).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

__all__ = ["generated_page_main", "with_generated"]

ROOT = Path(__file__).resolve().parent.parent


def with_generated(page: str, start: str, end: str, generated: str) -> str:
    """``page`` with what lies between the ``start`` and ``end`` markers replaced by ``generated``."""
    head, _, rest = page.partition(start)
    _, _, tail = rest.partition(end)
    return f"{head}{start}\n{generated}{end}{tail}"


def generated_page_main(
    argv: list[str] | None,
    doc: str | None,
    page: Path,
    markers: tuple[str, str],
    generate: Callable[[], str],
    tool: str,
) -> int:
    """Print, ``--write`` or ``--check`` the part of ``page`` between ``markers`` that ``generate`` gives.

    ``doc`` is the tool's docstring (its first line describes it) and ``tool``
    its ``__file__``, named in the message that says how to update the page.
    """
    start, end = markers
    name = page.relative_to(ROOT)
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"update {name}")
    parser.add_argument("--check", action="store_true", help=f"exit 1 if {name} is out of date")
    args = parser.parse_args(argv)
    generated = generate()
    if not (args.write or args.check):
        sys.stdout.write(generated)
        return 0
    text = page.read_text(encoding="utf-8")
    if start not in text or end not in text:
        print(f"{name} has no {start} … {end} section", file=sys.stderr)
        return 1
    wanted = with_generated(text, start, end, generated)
    if args.check:
        if wanted != text:
            print(
                f"{name} is out of date: run python {Path(tool).resolve().relative_to(ROOT)} --write", file=sys.stderr
            )
            return 1
        return 0
    page.write_text(wanted, encoding="utf-8")
    return 0
