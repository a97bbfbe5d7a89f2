"""Generate docs/reference/javascript.md from the JSDoc of ``window.__jupyter_loopback__`` in comm_bridge/js/api.js.

Every member of the object that ``api()`` builds and that carries a JSDoc
comment is listed, with its parameters and description, in source order.

    python tools/js_reference.py            # print the page's generated part
    python tools/js_reference.py --write    # put it into docs/reference/javascript.md
    python tools/js_reference.py --check    # exit 1 if the page is out of date
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from _generated import generated_page_main

__all__ = ["Member", "members", "render"]

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "comm_bridge" / "js" / "api.js"
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
    return generated_page_main(
        argv, __doc__, PAGE, (START, END), lambda: render(members(SOURCE.read_text(encoding="utf-8"))), tool=__file__
    )


if __name__ == "__main__":
    raise SystemExit(main())
