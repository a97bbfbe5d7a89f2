#!/usr/bin/env python3
"""Print a pip constraints file pinning each dependency to the lower bound pyproject.toml states.

pip has no "lowest" resolution, so ``make test`` installs a second venv with
these pins (``-c``) to check that the stated bounds are true. Every
dependency of the package and of the extras named on the command line must
have a ``>=`` bound; one without fails here rather than going untested.

Usage (Python >= 3.11, for tomllib): lowest-constraints.py [EXTRA ...] > constraints.txt
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import tomllib

REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*([^;]*?)\s*(;.*)?$")


def main(extras: list[str]) -> int:
    project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in extras:
        requirements += project["optional-dependencies"][extra]
    for requirement in requirements:
        match = REQUIREMENT.match(requirement)
        if match is None:
            raise SystemExit(f"cannot read the requirement {requirement!r}")
        name, spec, marker = match.groups()
        if name == project["name"]:
            continue  # an extra naming another extra of this project
        lower = re.search(r">=\s*([^,\s]+)", spec)
        if lower is None:
            raise SystemExit(f"{name} states no lower bound (>=) in pyproject.toml")
        print(f"{name}=={lower[1]}{' ' + marker if marker else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
