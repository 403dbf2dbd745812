"""The soak harness (benchmarks/soak.py): its report's arithmetic, and one short run against the real server
(`mediaserver serve --workers 2`, the camera farm, aiortc viewers, a worker killed with SIGKILL)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from lib.soak_report import Run, load, report, slope_per_hour, stuck

ROOT = Path(__file__).resolve().parent.parent


def _sample(t: float, rss: float, not_up: tuple[str, ...] = ()) -> dict[str, object]:
    return {"t": t, "rss_mib": rss, "pss_mib": rss, "rss_by_process": {"front": rss}, "cpu_pct": 1.0,
            "states": {"streaming": 10}, "should_up": 10, "not_up": list(not_up), "reconnect_rate": {"worker-0": 2.0},
            "viewer_fps": [15.0], "restarts": 0, "farm_dropped": 0}  # fmt: skip


def test_slope_is_least_squares_per_hour() -> None:
    ts = [0.0, 600.0, 1200.0, 1800.0]
    assert slope_per_hour(ts, [100.0, 105.0, 110.0, 115.0]) == pytest.approx(30.0)
    assert slope_per_hour(ts, [100.0, 100.0, 100.0, 100.0]) == 0.0
    assert slope_per_hour(ts, [100.0, 110.0, 100.0, 110.0]) == pytest.approx(12.0)  # noise: a small slope
    assert slope_per_hour([0.0, 1.0], [1.0, 2.0]) is None  # too few points to say


def test_stuck_means_down_in_both_last_samples() -> None:
    run = Run({}, [_sample(0, 1, ("a", "b")), _sample(10, 1, ("b", "c")), _sample(20, 1, ("b", "d"))])
    assert stuck(run) == ["b"]


def test_report_flags_a_slow_recovery() -> None:
    meta = {"cameras": 10, "workers": 2, "minutes": 1, "farm": "READY ALL", "load": "0 0 0", "argv": [],
            "reconnect_cap": 50.0, "viewers": ["cam-00001"]}  # fmt: skip
    kill = {"t": 30, "worker": 1, "pid": 1, "watched": 100, "worker_up_s": 1.0, "streaming_s": 7.5,
            "streaming_before": 100, "curve": [[1.0, 0], [1.5, 50], [4.0, 90], [7.5, 100]]}  # fmt: skip
    lines = [f"SETUP {json.dumps(meta)}", *(f"SAMPLE {json.dumps(_sample(t, 100 + t / 60))}" for t in (10, 20, 30))]
    text = report(load([*lines, f"KILL {json.dumps(kill)}"]), "test machine", "x.png")
    assert "MISSED" in text and "50 % at 1.5 s" in text and "90 % at 4.0 s" in text
    assert "+60.0 MiB/hour" in text  # 1 MiB a minute
    assert "worker-0 2.0/s" in text and "cap 50/s" in text


def test_short_soak_against_the_server(tmp_path: Path, peers_available: None) -> None:
    """30 cameras for 40 s, two of them dropping every 20 s, one viewer, worker 1 killed half-way: the
    harness finds every camera back, the viewer at full rate, and writes its report."""
    argv = [sys.executable, str(ROOT / "benchmarks" / "soak.py"), "--minutes", "0.67", "--cameras", "30", "--drop",
            "0.1:20:2", "--viewers", "1", "--sample", "5", "--grace", "12", "--out", str(tmp_path)]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, timeout=170, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    run = load(out.stdout.splitlines())
    assert run.kill is not None and run.kill["streaming_s"] is not None and run.kill["streaming_s"] < 5
    assert stuck(run) == [] and len(run.samples) >= 7
    fps = [f for s in run.samples for f in s["viewer_fps"]]
    assert min(fps) > 12 and sum(fps) / len(fps) > 14.5
    assert run.samples[-1]["restarts"] == 1 and run.samples[-1]["farm_dropped"] > 0
    assert len(list(tmp_path.glob("soak-*.md"))) == 1 and len(list(tmp_path.glob("soak-*.png"))) == 1
