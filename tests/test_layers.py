"""The import layers of ARCHITECTURE.md, checked on every module's source (no import is executed).

core_ext                 imports nothing of the project
mediaserver              never imports signaling (the front talks to workers, not the other way round)
signaling                never imports core_ext (it never touches packets) nor the composition root
mediaserver.cli          the composition root: the only package that may import both sides
mediaserver.simcam       test peers: only the demo (and tests/benchmarks) may import them
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core_ext", "mediaserver", "signaling")


@dataclass(frozen=True)
class Rule:
    importer: str  # a package or module prefix
    forbidden: str
    unless: tuple[str, ...] = ()  # importers under these prefixes are exempt

    def breaks(self, importer: str, imported: str) -> bool:
        return (
            _under(importer, self.importer)
            and _under(imported, self.forbidden)
            and not any(_under(importer, ok) for ok in self.unless)
        )


RULES = (
    Rule("core_ext", "mediaserver"),
    Rule("core_ext", "signaling"),
    Rule("mediaserver", "signaling", unless=("mediaserver.cli",)),
    Rule("signaling", "core_ext"),
    Rule("signaling", "mediaserver.cli"),
    Rule("mediaserver", "mediaserver.cli", unless=("mediaserver.cli",)),
    Rule("mediaserver", "mediaserver.simcam", unless=("mediaserver.simcam", "mediaserver.cli.demo")),
    Rule("signaling", "mediaserver.simcam"),
)


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


_CYTHON_IMPORT = re.compile(r"^\s*(?:from|import|cimport)\s+([\w.]+)", re.M)


def imports(module: str, source: str, cython: bool = False) -> list[tuple[int, str]]:
    """(line, imported module) for every import in a module's source, lazy ones inside functions included."""
    if cython:  # no Python AST for .pyx: its import lines are plain enough to read
        return [(source.count("\n", 0, m.start()) + 1, m.group(1)) for m in _CYTHON_IMPORT.finditer(source)]
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing module's package
                anchor = module.split(".")[: -node.level]
                base = ".".join([*anchor, base] if base else anchor)
            out.append((node.lineno, base))
    return out


def violations(module: str, source: str, cython: bool = False) -> list[str]:
    return [
        f"{module}:{line}: imports {imported} ({rule})"
        for line, imported in imports(module, source, cython)
        for rule in RULES
        if rule.breaks(module, imported)
    ]


def project_sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for suffix in ("*.py", "*.pyx") for p in (ROOT / pkg).rglob(suffix))


def test_the_layers_hold() -> None:
    sources = project_sources()
    assert len(sources) > 50, "the sources were not found"
    found = [v for p in sources for v in violations(module_name(p), p.read_text(), p.suffix == ".pyx")]
    assert found == []


@pytest.mark.parametrize(
    ("module", "line"),
    [
        ("mediaserver/hub.py", "from signaling.access import ACCESS"),
        ("mediaserver/egress.py", "    import signaling.whep"),  # a lazy import inside a function counts too
        ("core_ext/gop.pyx", "from mediaserver.hub import Hub"),
        ("signaling/whep.py", "from core_ext.fanout import send_all"),
        ("signaling/api.py", "from mediaserver.simcam.clips import ensure_clip"),
        ("mediaserver/worker.py", "from mediaserver.cli.serve import start"),
    ],
)
def test_a_forbidden_import_is_caught(module: str, line: str) -> None:
    """The check is not vacuous: each rule fails on a deliberate violation added to a real module's source."""
    path = ROOT / module
    probe = f"def _probe():\n{line}\n" if line.startswith(" ") else f"{line}\n"
    found = violations(module_name(path), path.read_text() + "\n" + probe, path.suffix == ".pyx")
    assert len(found) == 1 and line.split()[1] in found[0], found


def test_the_composition_root_may_cross() -> None:
    for path in (ROOT / "mediaserver/cli/serve.py", ROOT / "mediaserver/cli/demo.py"):
        crossing = [m for _, m in imports(module_name(path), path.read_text()) if _under(m, "signaling")]
        assert crossing and violations(module_name(path), path.read_text()) == []
