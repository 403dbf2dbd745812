"""Known vulnerabilities in the pinned dependencies (constraints.txt), online with pip-audit or offline.

    .venv/bin/python scripts/audit_deps.py                       # pip-audit (in build/audit-venv) against PyPI and OSV
    .venv/bin/python scripts/audit_deps.py --osv-dir DIR         # offline: OSV advisories unpacked in DIR, no network
    .venv/bin/python scripts/audit_deps.py --write               # also record benchmarks/results/deps-audit-<date>.md

Online, pip-audit asks PyPI's JSON API (`vulns`) and then OSV (api.osv.dev) about each pinned version. A
mirror without that data, or no route to the databases, makes pip-audit *skip* packages while still printing
"No known vulnerabilities found": this script counts the skips and says so (exit 2), never passing silently.

Offline: download https://osv-vulnerabilities.storage.googleapis.com/PyPI/all.zip on a connected machine,
unzip it into DIR and carry DIR over; each advisory's affected versions and ECOSYSTEM ranges are matched here.

Exit status: 0 every pin audited and none vulnerable, 1 a vulnerable pin, 2 some pins could not be audited.
Not part of scripts/test.sh: it needs the vulnerability databases, the tests need nothing beyond PyPI.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CONSTRAINTS = ROOT / "constraints.txt"
TOOL_VENV = ROOT / "build" / "audit-venv"
PIP_AUDIT = "pip-audit>=2.7,<3"
SERVICES = ("pypi", "osv")


@dataclass
class Report:
    source: str
    pins: dict[str, str]
    vulnerable: dict[str, list[str]] = field(default_factory=dict)  # name -> advisory ids (with fixes)
    unaudited: dict[str, str] = field(default_factory=dict)  # name -> why
    log: str = ""

    @property
    def status(self) -> int:
        return 1 if self.vulnerable else 2 if self.unaudited else 0

    def summary(self) -> str:
        audited = len(self.pins) - len(self.unaudited)
        if self.vulnerable:
            return f"VULNERABLE: {len(self.vulnerable)} of {len(self.pins)} pins ({self.source})"
        if self.unaudited:
            return (f"NOT AUDITED: {len(self.unaudited)} of {len(self.pins)} pins could not be checked ({self.source}:"
                    f" the vulnerability database is unreachable or does not know these versions); {audited} audited,"
                    " none vulnerable")  # fmt: skip
        return f"OK: {audited} of {len(self.pins)} pins audited, no known vulnerabilities ({self.source})"


def read_pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[normalise(name)] = version.strip()
    return pins


def normalise(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


# -- online: pip-audit ------------------------------------------------------------------------------------------


def tool() -> Path:
    """pip-audit in a venv of its own (never the project's: its dependencies must not enter the lock)."""
    exe = TOOL_VENV / "bin" / "pip-audit"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(TOOL_VENV)], check=True)
        subprocess.run([str(TOOL_VENV / "bin" / "pip"), "install", "-q", PIP_AUDIT], check=True)
    return exe


def pip_audit(pins: dict[str, str], service: str) -> Report:
    cmd = [str(tool()), "--no-deps", "--disable-pip", "-r", str(CONSTRAINTS), "-s", service, "-f", "json",
           "--progress-spinner", "off"]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    log = "\n".join(run.stderr.replace(str(ROOT), ".").strip().splitlines()[-3:])
    report = Report(f"pip-audit -s {service}", pins, log=log)
    try:
        doc: dict[str, Any] = json.loads(run.stdout)
    except ValueError:
        last = run.stderr.strip().splitlines()[-1:] or [""]
        report.unaudited = dict.fromkeys(pins, f"pip-audit failed (exit {run.returncode}): {last[0][-300:]}")
        return report
    for dep in doc.get("dependencies", []):
        name = normalise(str(dep["name"]))
        if "skip_reason" in dep:
            report.unaudited[name] = str(dep["skip_reason"])
        elif dep.get("vulns"):
            report.vulnerable[name] = [f"{v['id']} (fixed in {', '.join(v.get('fix_versions') or ['?'])})"
                                       for v in dep["vulns"]]  # fmt: skip
    return report


# -- offline: OSV advisories on disk ----------------------------------------------------------------------------


def osv_offline(pins: dict[str, str], directory: Path) -> Report:
    from packaging.version import InvalidVersion, Version

    report = Report(f"OSV advisories in {directory}", pins)
    files = sorted(directory.rglob("*.json"))
    if not files:
        report.unaudited = dict.fromkeys(pins, f"no OSV advisories (*.json) in {directory}")
        return report
    for path in files:
        advisory = json.loads(path.read_text(encoding="utf-8"))
        for affected in advisory.get("affected", []):
            package = affected.get("package", {})
            name = normalise(str(package.get("name", "")))
            if package.get("ecosystem") != "PyPI" or name not in pins:
                continue
            try:
                version = Version(pins[name])
            except InvalidVersion:
                continue
            if pins[name] in affected.get("versions", []) or any(
                in_range(version, r) for r in affected.get("ranges", []) if r.get("type") == "ECOSYSTEM"
            ):
                report.vulnerable.setdefault(name, []).append(str(advisory.get("id", path.stem)))
    report.log = f"{len(files)} advisories read"
    return report


def in_range(version: Any, rng: dict[str, Any]) -> bool:
    """OSV ECOSYSTEM range: events in order, each `introduced` opening and `fixed`/`last_affected` closing."""
    from packaging.version import Version

    affected = False
    for event in rng.get("events", []):
        if "introduced" in event:
            start = event["introduced"]
            affected = start == "0" or version >= Version(start)
        elif "fixed" in event and affected and version >= Version(event["fixed"]):
            affected = False
        elif "last_affected" in event and affected and version > Version(event["last_affected"]):
            affected = False
    return affected


# -- the record -------------------------------------------------------------------------------------------------


def markdown(reports: list[Report], command: str) -> str:
    pins = reports[0].pins
    lines = [f"# Dependency audit, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
             f"Command: `{command}`  ", f"Machine: {os.cpu_count()} vCPU, load average "
             f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}, Python {platform.python_version()}; "
             f"{len(pins)} pins from constraints.txt.", ""]  # fmt: skip
    for report in reports:
        lines += [f"## {report.source}", "", f"**{report.summary()}**", ""]
        for name, ids in sorted(report.vulnerable.items()):
            lines.append(f"- {name}=={pins.get(name, '?')}: {'; '.join(ids)}")
        reasons = sorted(set(report.unaudited.values()))
        if reasons:
            lines.append(f"Unaudited pins ({len(report.unaudited)}), first reasons:")
            lines += [f"- {reason}" for reason in reasons[:5]]
        if report.log:
            lines += ["", "```", report.log[-1000:], "```"]
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--osv-dir", type=Path, help="offline: a directory of OSV advisories (JSON), no network")
    parser.add_argument("--write", action="store_true", help="record benchmarks/results/deps-audit-<date>.md")
    args = parser.parse_args()
    pins = read_pins(CONSTRAINTS)
    if args.osv_dir:
        reports = [osv_offline(pins, args.osv_dir)]
    else:
        reports = [pip_audit(pins, service) for service in SERVICES]
    for report in reports:
        print(report.summary())
        for name, ids in sorted(report.vulnerable.items()):
            print(f"  {name}=={pins.get(name)}: {'; '.join(ids)}")
    if args.write:
        out = ROOT / "benchmarks" / "results" / f"deps-audit-{time.strftime('%Y-%m-%d', time.gmtime())}.md"
        out.write_text(markdown(reports, " ".join([".venv/bin/python scripts/audit_deps.py", *sys.argv[1:]])))
        print(f"wrote {out.relative_to(ROOT)}")
    # Combined: a vulnerability found by any source wins; otherwise a pin no source could audit counts.
    if any(r.vulnerable for r in reports):
        return 1
    unaudited = set.intersection(*(set(r.unaudited) for r in reports))
    return 2 if unaudited else 0


if __name__ == "__main__":
    raise SystemExit(main())
