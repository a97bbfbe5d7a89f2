"""Generate docs/reference/javascript.md from the JSDoc of ``window.__jupyter_loopback__`` in bridge.js.

Every member of the object that ``api()`` builds and that carries a JSDoc
comment is listed, with its parameters and description, in source order.

    python tools/js_reference.py            # print the page's generated part
    python tools/js_reference.py --write    # put it into docs/reference/javascript.md
    python tools/js_reference.py --check    # exit 1 if the page is out of date
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Member", "members", "render"]

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "comm_bridge" / "static" / "bridge.js"
PAGE = ROOT / "docs" / "reference" / "javascript.md"
START, END = "<!-- js-reference:start -->", "<!-- js-reference:end -->"

MEMBER = re.compile(r"^\s*(?P<name>\w+):\s*(?:\((?P<args>[^)]*)\)|(?P<arg>\w+))\s*=>")
PARAM = re.compile(r"@param\s+\{(?P<type>[^}]*)\}\s+(?P<name>\[?[\w.]+(?:=[^\]]*)?\]?)")
RETURNS = re.compile(r"@returns\s+\{(?P<type>[^}]*)\}")


@dataclass(frozen=True)
class Member:
    name: str
    params: list[tuple[str, str]]  # (name, type); an optional one is written [name]
    returns: str | None
    text: str


def members(source: str) -> list[Member]:
    """The documented members of the ``created`` object in ``api()``, in source order."""
    body = source.split("function api()", 1)[1].split("const created = {", 1)[1].split("\n  };", 1)[0]
    out: list[Member] = []
    doc: list[str] = []
    in_doc = False
    for line in body.splitlines():
        stripped = line.strip()
        if stripped.startswith("/**"):
            in_doc, doc = True, []
        if in_doc:
            doc.append(stripped.removeprefix("/**").removesuffix("*/").lstrip("* ").rstrip())
            if stripped.endswith("*/"):
                in_doc = False
            continue
        m = MEMBER.match(line)
        if m and doc:
            comment = " ".join(part for part in doc if part)
            params = [(p["name"], p["type"]) for p in PARAM.finditer(comment)]
            returns = RETURNS.search(comment)
            text = re.sub(r"@\w+\s+(\{[^}]*\}\s+)?(\[[^\]]*\]|\S+)?", "", comment).strip()
            out.append(Member(m["name"], params, returns["type"] if returns else None, " ".join(text.split())))
        if not stripped.startswith("/**"):
            doc = [] if not in_doc else doc
    return out


def render(found: list[Member]) -> str:
    lines = []
    for member in found:
        names = ", ".join(name for name, _ in member.params)
        lines += [f"### `{member.name}({names})`", ""]
        if member.text:
            lines += [member.text, ""]
        for name, kind in member.params:
            lines.append(f"- `{name}`: `{kind}`")
        if member.returns:
            lines.append(f"- returns `{member.returns}`")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    generated = render(members(SOURCE.read_text(encoding="utf-8")))
    if not (args.write or args.check):
        sys.stdout.write(generated)
        return 0
    page = PAGE.read_text(encoding="utf-8")
    head, _, rest = page.partition(START)
    _, _, tail = rest.partition(END)
    wanted = f"{head}{START}\n{generated}{END}{tail}"
    if args.check:
        if wanted != page:
            print(f"{PAGE.relative_to(ROOT)} is out of date: run python tools/js_reference.py --write", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
