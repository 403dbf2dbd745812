"""Wake-ups per camera with and without coalesced reads (`--idle-read-ms`), on one in-process worker.

    .venv/bin/python benchmarks/idle_reads.py --cameras 1000 --interval-ms 0 50 100 --seconds 20

Starts the camera farm (benchmarks/camfarm.py), then for each interval runs a Worker (uvloop) holding every
camera: waits until all stream, measures for --seconds and prints reads/s per camera, frames/s and the
worker's CPU (% of one core) and RSS. Nobody watches, so every camera is an idle one.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mediaserver.metrics import resident_bytes
from mediaserver.registry import make_camera
from mediaserver.worker import Worker, WorkerSettings


def start_farm(cameras: int, procs: int, fps: int) -> tuple[subprocess.Popen[str], dict[int, str]]:
    farm = Path(__file__).resolve().parent / "camfarm.py"
    argv = [sys.executable, str(farm), "--cameras", str(cameras), "--procs", str(procs), "--port", "0",
            "--fps", str(fps)]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    urls: dict[int, str] = {}
    for line in proc.stdout:
        if line.startswith("READY ALL"):
            return proc, urls
        if line.startswith("READY "):
            url, span = line.split()[1:3]
            first, last = (int(x) for x in span.split("-"))
            for i in range(first, last + 1):
                urls[i] = url.rsplit("/", 1)[0] + f"/cam{i}"
    raise RuntimeError("camera farm did not start")


async def measure(urls: dict[int, str], interval_s: float, seconds: float) -> dict[str, float]:
    worker = Worker(WorkerSettings(idle_read_interval=interval_s, reconnect_rate=500))
    for i, url in urls.items():
        worker.add_camera(make_camera(f"cam{i}", f"cam{i}", "", 37.5, 127.0, url))
    async with asyncio.timeout(60):
        while sum(1 for ing in worker.ingests.values() if ing.hub.units) < len(urls):
            await asyncio.sleep(0.2)
    await asyncio.sleep(2)  # settle
    ingests = list(worker.ingests.values())
    reads0, frames0, cpu0, t0 = (sum(i.socket_reads() for i in ingests), sum(i.hub.units for i in ingests),
                                 sum(os.times()[:2]), time.monotonic())  # fmt: skip
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - t0
    reads = sum(i.socket_reads() for i in ingests) - reads0
    frames = sum(i.hub.units for i in ingests) - frames0
    cpu = sum(os.times()[:2]) - cpu0
    lost = sum(i.rtp_counters()["lost"] for i in ingests)
    n = len(urls)
    result = {"interval_ms": interval_s * 1000, "cameras": n, "reads_per_s_per_camera": reads / elapsed / n,
              "frames_per_s": frames / elapsed, "cpu_pct_of_core": 100 * cpu / elapsed,
              "cpu_pct_per_camera": 100 * cpu / elapsed / n, "rss_mib": resident_bytes() / 2**20,
              "lost": lost}  # fmt: skip
    await worker.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cameras", type=int, default=500)
    parser.add_argument("--procs", type=int, default=1)
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--interval-ms", type=float, nargs="+", default=[0, 50, 100])
    parser.add_argument("--seconds", type=float, default=15)
    args = parser.parse_args()
    farm, urls = start_farm(args.cameras, args.procs, args.fps)
    try:
        for interval in args.interval_ms:
            result = uvloop.run(measure(urls, interval / 1000, args.seconds))
            print(" ".join(f"{k}={v:.3g}" for k, v in result.items()), flush=True)
    finally:
        farm.terminate()
        farm.wait(10)


if __name__ == "__main__":
    main()
