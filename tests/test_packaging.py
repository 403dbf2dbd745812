"""`pip install .` must ship every package, the compiled extensions and the console's static files."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_holds_packages_extensions_and_web(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        timeout=600,
    )
    [wheel] = tmp_path.glob("goldentime-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    expected_sources = {
        str(p.relative_to(ROOT))
        for package in ("mediaserver", "signaling", "core_ext")
        for p in (ROOT / package).rglob("*.py")
    }
    assert expected_sources <= set(names), sorted(expected_sources - set(names))
    for module in ("rtp", "depacketize", "framing", "fanout", "udprecv"):
        assert any(n.startswith(f"core_ext/{module}.") and n.endswith(".so") for n in names), module
    assert "core_ext/py.typed" in names and "core_ext/framing.pyi" in names
    web = {n.rsplit("/", 1)[1] for n in names if "/data/share/goldentime/web/" in n}
    assert web == {p.name for p in (ROOT / "web").iterdir() if p.is_file()}
