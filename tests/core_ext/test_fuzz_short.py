"""A small fuzzing budget for CI, every target of fuzz/registry.py (fuzz/run.py runs the long ones), and the inputs
fuzzing has found, replayed (tests/test_fuzz_python.py pins the Python parsers' findings with explicit cases too)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fuzz import targets
from fuzz.registry import TARGETS
from fuzz.run import run_random

pytestmark = pytest.mark.e2e  # a CPU budget per target, not seconds

FOUND = Path(__file__).with_name("fixtures") / "fuzz"


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_short_fuzz_run(name: str, tmp_path: Path) -> None:
    """Seeded mutations of each target's seeds for ~2 s of CPU; a failing input is kept in tmp_path."""
    done, _ = run_random(name, 1_000_000, 2.0, seed=13, on_crash=lambda _, data: (tmp_path / "input").write_bytes(data))
    assert done >= len(TARGETS[name].seeds())


@pytest.mark.parametrize("path", sorted(FOUND.glob("*.bin")), ids=lambda p: p.stem)
def test_found_inputs_stay_fixed(path: Path) -> None:
    """Each file is an input that once failed (named `<target>-...`): the parameter-set floods were found by
    fuzz/run.py against the build before issue 15's fix, the incident and token_forged ones before issue 13's."""
    TARGETS[path.name.split("-")[0]].run(path.read_bytes())


def test_a_burst_operation_floods_the_store_to_its_cap() -> None:
    """The targets' burst operation (what found the flood on the old build) fills the store to its cap."""
    from core_ext.depacketize import H264Depacketizer

    dep = H264Depacketizer()
    _, packets = targets.depacketizer_packets(b"\x00\x02\x01\x00\xff\x04\x04", h265=False)  # 256 PPS of 1 KB
    for packet in packets:
        dep.push(packet)
    targets.check_depacketizer_state(dep)
    assert dep.parameter_set_count == targets.PS_MAX_PER_KIND
