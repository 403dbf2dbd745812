"""What the camera farm costs per camera, with no server: the farm serves N TCP cameras to a cheap sink
(camfarm_sink.py, in its own process) and the farm's CPU is read from /proc over a window.

    .venv/bin/python benchmarks/camfarm_cost.py --cameras 2000 --seconds 30 --farm-args "--procs 1"
    .venv/bin/python benchmarks/camfarm_cost.py --cameras 2000 --seconds 30 --farm-args "--procs 1" --write

On loopback the sender's send(2) also runs the receiver's TCP input path, so the farm's kernel time holds part
of what a remote receiver would pay; the sink reads every socket every 100 ms, like the server's batched idle
reads, so that part is what it is beside the real server. Prints one JSON line; --write adds a results file.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import shlex
import sys
import time
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib.camfarm_measure import cpu_seconds, machine
from lib.camfarm_proc import RunningFarm, camfarm
from lib.camfarm_sink import Sink

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cameras", type=int, default=2000)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--farm-args", default="", help="extra camfarm.py arguments, e.g. '--procs 2 --tick 0.02'")
    p.add_argument("--write", action="store_true", help="write benchmarks/results/camfarm-cost-<date>.md")
    p.add_argument("--tag", default="")
    return p.parse_args(argv)


def sink_process(urls: list[str], seconds: float, pipe: Connection) -> None:
    sink = Sink()
    sink.connect(urls)
    pipe.send("connected")
    pipe.recv()  # the parent starts the window
    sink.drain()
    start = sink.received
    sink.run(seconds)
    pipe.send({"bytes": sink.received - start, "closed": sink.closed, "cpu_s": sum(os.times()[:2])})
    sink.close()


def measure(farm: RunningFarm, n: int, seconds: float, fps: int) -> dict[str, object]:
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=sink_process, args=([farm.url(c) for c in range(1, n + 1)], seconds, child))
    proc.start()
    if not parent.poll(120):
        raise RuntimeError("sink did not connect")
    parent.recv()
    deadline = time.monotonic() + 30
    while farm.stat("playing") < n and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(3)  # let the connection burst pass
    frames0, late0, skipped0 = farm.stat("frames"), farm.stat("late_ticks"), farm.stat("skipped")
    cpu0, t0 = cpu_seconds(farm.all_pids), time.monotonic()
    parent.send("go")
    report = parent.recv()
    elapsed = time.monotonic() - t0
    cpu = cpu_seconds(farm.all_pids) - cpu0
    playing, frames, late, skipped = (farm.stat(k) for k in ("playing", "frames", "late_ticks", "skipped"))
    proc.join(10)
    return {
        "cameras": n, "playing_at_end": playing, "seconds": round(elapsed, 1),
        "farm_cpu_pct": round(100 * cpu / elapsed, 1), "per_1k_cameras_pct": round(100 * cpu / elapsed * 1000 / n, 2),
        "frames_per_s": round((frames - frames0) / elapsed), "frames_expected_per_s": n * fps,
        "late_ticks": late - late0, "skipped": skipped - skipped0,
        "sink_mbit_s": round(report["bytes"] * 8 / elapsed / 1e6, 1), "sink_closed": report["closed"],
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    load = os.getloadavg()
    farm_args = ["--cameras", str(args.cameras), "--port", "0", "--stats", "1", *shlex.split(args.farm_args)]
    with camfarm(farm_args) as farm:
        fps = int(re.search(r"fps=(\d+)", farm.info).group(1))  # type: ignore[union-attr]
        result = measure(farm, args.cameras, args.seconds, fps)
        result["farm"] = farm.info
    result["load_at_start"] = " ".join(f"{x:.2f}" for x in load)
    print(json.dumps(result), flush=True)
    if args.write:
        write(result, argv if argv is not None else sys.argv[1:], args.tag)


def write(result: dict[str, object], argv: list[str], tag: str) -> None:
    stamp = datetime.now().strftime("%Y-%m-%d-%H%M") + (f"-{tag}" if tag else "")
    path = RESULTS / f"camfarm-cost-{stamp}.md"
    lines = [
        "# Camera farm cost per camera (no server; a cheap sink reads every camera every 100 ms)",
        "",
        f"- machine: {machine()}",
        f"- load average at start: {result['load_at_start']}",
        f"- command: `.venv/bin/python benchmarks/camfarm_cost.py {shlex.join(argv)}`",
        "",
        "```json",
        json.dumps(result, indent=1),
        "```",
        "",
    ]
    path.write_text("\n".join(lines))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
