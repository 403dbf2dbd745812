"""Policy code decides from plain values (issue 10: no `web.Request` in policy code): the access layer, its
refusals and quotas never read an HTTP request; the HTTP edge (signaling/edge.py) maps their errors to statuses."""

from __future__ import annotations

import ast
from pathlib import Path

SIGNALING = Path(__file__).resolve().parent.parent / "signaling"
POLICY = ("access.py", "errors.py", "quotas.py", "views.py")


def test_policy_modules_never_touch_a_request() -> None:
    for name in POLICY:
        tree = ast.parse((SIGNALING / name).read_text())
        requests = [
            n.lineno for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr in ("Request", "headers")
        ]
        assert not requests, f"{name} reads an HTTP request at lines {requests}"
        raised = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr.startswith("HTTP")]
        assert not raised, f"{name} raises HTTP exceptions at lines {raised}: raise AccessDenied"


def test_refusals_and_quotas_import_no_web_framework() -> None:
    for name in ("errors.py", "quotas.py", "views.py"):
        tree = ast.parse((SIGNALING / name).read_text())
        modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        modules |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not any(m.split(".")[0] == "aiohttp" for m in modules), name
