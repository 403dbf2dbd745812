"""The RTSP client knows nothing of the hub (issue 10 item 2): mediaserver/rtsp/ imports only itself, core_ext and
the ingest seam (mediaserver/sink.py). Checked on the source; nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

RTSP = Path(__file__).resolve().parents[2] / "mediaserver" / "rtsp"
ALLOWED = ("mediaserver.rtsp", "mediaserver.sink", "core_ext")


def project_imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
    return [n for n in names if n.split(".")[0] in ("mediaserver", "core_ext", "signaling")]


@pytest.mark.parametrize("path", sorted(RTSP.glob("*.py")), ids=lambda p: p.name)
def test_rtsp_imports_only_itself_core_ext_and_the_sink(path: Path) -> None:
    bad = [n for n in project_imports(path) if not any(n == ok or n.startswith(ok + ".") for ok in ALLOWED)]
    assert not bad, f"{path.name} imports {bad}: the RTSP client must reach the hub only through mediaserver.sink"
