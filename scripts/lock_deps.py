"""Write constraints.txt: the exact versions in this venv of what Goldentime needs to build, run and test.

    .venv/bin/python scripts/lock_deps.py            # after a deliberate upgrade in .venv; then run the tests
    .venv/bin/python scripts/lock_deps.py --check    # exit 1 if constraints.txt differs from the venv

The set is the closure of pyproject's runtime dependencies and its `test` and `fuzz` extras, plus the build
requirements (setuptools, wheel, Cython): a `pip freeze` filtered to the project, so that a helper installed
by hand for an experiment never lands in the lock. scripts/setup.sh installs with `-c constraints.txt`.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "constraints.txt"
EXTRAS = ("test", "fuzz")
HEADER = """\
# Pinned versions for reproducible installs (pip install -c constraints.txt -e '.[test]'), written by
# scripts/lock_deps.py from a venv that passed the tests; pyproject.toml keeps the ranges. Audit: scripts/audit_deps.sh.
"""


def roots() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    reqs = [*project["project"]["dependencies"], *project["build-system"]["requires"]]
    for extra in EXTRAS:
        reqs += project["project"]["optional-dependencies"].get(extra, [])
    return [Requirement(r) for r in reqs]


def closure(start: list[Requirement]) -> tuple[dict[str, str], set[str]]:
    """(name -> installed version, names not installed), following each distribution's requirements (with the
    extras asked for)."""
    pinned: dict[str, str] = {}
    missing: set[str] = set()
    todo = [(r, frozenset(r.extras)) for r in start]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        req, extras = todo.pop()
        key = (canonicalize_name(req.name), extras)
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            missing.add(req.name)
            continue
        pinned[dist.metadata["Name"]] = dist.version
        for text in dist.requires or []:
            sub = Requirement(text)
            env = [{"extra": e} for e in extras] or [{"extra": ""}]
            if sub.marker is None or any(sub.marker.evaluate(e) for e in env):
                todo.append((sub, frozenset(sub.extras)))
    return pinned, missing


def parse(text: str) -> dict[str, str]:
    pins = {}
    for line in text.splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.strip().split("==", 1)
            pins[canonicalize_name(name)] = version
    return pins


def render(pinned: dict[str, str]) -> str:
    lines = [f"{name}=={version}" for name, version in sorted(pinned.items(), key=lambda kv: kv[0].lower())]
    return HEADER + "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare with constraints.txt instead of writing it")
    args = parser.parse_args()
    pinned, missing = closure(roots())
    if args.check:
        # A venv without an optional extra (setup.sh installs `test`, not `fuzz`) still matches on what it has.
        locked = parse(OUT.read_text()) if OUT.exists() else {}
        have = {canonicalize_name(name): version for name, version in pinned.items()}
        differ = sorted(f"{n}: venv {v}, lock {locked.get(n)}" for n, v in have.items() if locked.get(n) != v)
        print("constraints.txt matches the venv" if not differ else "differs: " + "; ".join(differ))
        return 1 if differ else 0
    if missing:
        sys.exit(f"not installed: {', '.join(sorted(missing))}; install the project with [test,fuzz] first")
    text = render(pinned)
    OUT.write_text(text)
    print(f"wrote {OUT.name}: {text.count('==')} pins")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
