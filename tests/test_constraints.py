"""The lock (constraints.txt) and its audit (issue 13, item 5): the pins agree with pyproject's ranges and with
the installed venv, and the offline audit matches OSV advisories the way OSV defines them."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_every_pin_is_inside_pyproject_ranges() -> None:
    lock, audit = script("lock_deps"), script("audit_deps")
    pins = audit.read_pins(ROOT / "constraints.txt")
    for req in lock.roots():
        name = audit.normalise(req.name)
        assert name in pins, f"{req.name} is not pinned"
        assert req.specifier.contains(pins[name], prereleases=True), f"{req.name}=={pins[name]} outside {req}"


def test_the_venv_is_what_the_lock_says() -> None:
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "lock_deps.py"), "--check"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr + " (after a deliberate upgrade: scripts/lock_deps.py)"


def advisory(tmp: Path, name: str, package: str, **affected: object) -> None:
    doc = {"id": name, "affected": [{"package": {"ecosystem": "PyPI", "name": package}, **affected}]}
    (tmp / f"{name}.json").write_text(json.dumps(doc))


def test_offline_audit_reports_a_pinned_version_in_an_advisory(tmp_path: Path) -> None:
    audit = script("audit_deps")
    pins = {"aiohttp": "3.14.5", "pyjwt": "2.15.1", "av": "18.1.0"}
    fixed_after = "3.14.6"
    advisory(tmp_path, "OSV-OPEN", "aiohttp", ranges=[{"type": "ECOSYSTEM", "events": [{"introduced": "0"},
             {"fixed": fixed_after}]}])  # fmt: skip
    advisory(tmp_path, "OSV-FIXED", "PyJWT", ranges=[{"type": "ECOSYSTEM", "events": [{"introduced": "2.0"},
             {"fixed": "2.15.0"}]}])  # fmt: skip
    advisory(tmp_path, "OSV-LISTED", "av", versions=["18.1.0"])
    advisory(tmp_path, "OSV-OTHER", "requests", versions=["2.0.0"])
    report = audit.osv_offline(pins, tmp_path)
    assert report.vulnerable == {"aiohttp": ["OSV-OPEN"], "av": ["OSV-LISTED"]}
    assert report.status == 1 and not report.unaudited


def test_offline_audit_without_advisories_says_nothing_was_audited(tmp_path: Path) -> None:
    report = script("audit_deps").osv_offline({"aiohttp": "3.14.5"}, tmp_path)
    assert report.status == 2 and "NOT AUDITED" in report.summary()
